"""``tvl-async bench``: tvl_async against a DataLoader + PyAV-seek baseline and the sequential
ceiling, on one machine, in one run (docs/benchmarks.md).

:mod:`~tvl_async.cli.bench.command` (options, outputs), :mod:`~tvl_async.cli.bench.runner`
(the parent process), :mod:`~tvl_async.cli.bench.child` (one configuration per process),
:mod:`~tvl_async.cli.bench.configs`, :mod:`~tvl_async.cli.bench.workloads` (the measured
loops), :mod:`~tvl_async.cli.bench.videos` (the reference video set),
:mod:`~tvl_async.cli.bench.report` (table and matplotlib chart)."""
