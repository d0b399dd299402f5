"""The ``ptap`` command line: a thin layer over :mod:`bus.client`.

It talks to the manager only through the bus client (requests on ROUTER,
events on PUB), never through manager internals, so it works against any
manager that speaks the protocol in ``docs/protocol.md``.

Modules: :mod:`manager.cli.main` (arguments, error translation),
:mod:`manager.cli.session` (addresses, client, ZeroMQ context),
:mod:`manager.cli.discovery` (the local cluster's manager and keys, when not given),
:mod:`manager.cli.commands` (one function per command),
:mod:`manager.cli.follow` (``run --wait`` and ``watch``),
:mod:`manager.cli.render` (tables and human views),
:mod:`manager.cli.doctor` with :mod:`manager.cli.doctor_gather` (``ptap doctor``).
"""
