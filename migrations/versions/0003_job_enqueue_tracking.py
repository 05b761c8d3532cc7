"""job enqueue tracking, for the sweep that re-sends lost messages

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 19:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('enqueued_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('enqueues', sa.Integer(), server_default='1',
                                      nullable=False))
    op.execute("UPDATE jobs SET enqueued_at = created_at")
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.alter_column('enqueued_at', existing_type=sa.DateTime(timezone=True),
                              nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('enqueues')
        batch_op.drop_column('enqueued_at')
