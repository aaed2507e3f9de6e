"""The test kit: what tests and benchmarks share, outside the shipped packages.

- ``process``: the one service-process handle (a real console script, its JSON log, probes, metrics);
- ``metrics``: the one Prometheus scraper;
- ``kafka``: publishing records and the one consumer-until-done helper;
- ``events``: the synthetic event generators (a realistic day, a throughput mix, one of every type);
- ``ci``: "fail on CI, skip elsewhere" for a missing service or tool;
- ``stream``, ``sinks``, ``gateway``: per-stage settings and drivers built on the above.

Product packages (proto, common, agent, stream, sinks, gateway, reports, devstack) never import it;
``tests/test_packaging.py`` checks that. Importable as ``tests.support`` (pytest puts the repository root on
``sys.path``, see ``pythonpath`` in pyproject.toml; the benchmarks insert it themselves).
"""
