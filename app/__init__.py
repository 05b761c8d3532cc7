"""The layerlens application: the commands the ``layerlens`` program gets from the full
package (analyze, serve, api, worker, migrate, keys, demo) and the processes they launch.

It sits on top of everything else: it may import the engine (``layerlens``), the shared
infrastructure (``infra``), the HTTP service (``service``), the workers (``workers``) and
the light client; none of those imports it.
"""
