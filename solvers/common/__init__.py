"""The project's shared runtime, in its lowest layer (no dolfinx, no PETSc, no torch here).

``atomic``       atomic output files (one symlink/umask rule), SHA-256 of files
``toml``         the one TOML reader and the ``--set key=value`` parser
``validation``   the one input validator (parameter vectors and batches) and setting checks
``memory``       available memory and the memory guard used before large allocations
``cli``          the command-line runtime: rank-0 parser, signals, exit statuses
``mpi_network``  ``init_mpi``: the one way to start MPI (sockets on loopback for one node)

Every package (solvers, datasets, surrogate, train) uses these; they import nothing from the
project except :mod:`solvers.errors`.
"""
