"""The sandbox: deterministic stand-ins for the source units' systems (SQL databases, file
drops, a JSON API) with defects injected at known rates. See ``sandbox/README.md``.

Public API: :func:`sandbox.build.build_sandbox`, :class:`sandbox.api_server.SandboxApi`,
:func:`sandbox.api_server.set_http_port`, :func:`sandbox.world.build_world`.
"""
