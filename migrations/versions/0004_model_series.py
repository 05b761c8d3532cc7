"""models.series, models.step and jobs.series: the checkpoints of a training run (issue 14)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 01:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.add_column(sa.Column('series', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('step', sa.BigInteger(), nullable=True))
        batch_op.create_index(batch_op.f('ix_models_series'), ['series'], unique=False)
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('series', sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('series')
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_models_series'))
        batch_op.drop_column('step')
        batch_op.drop_column('series')
