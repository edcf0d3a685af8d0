"""VarPro training of separable surrogates: GNvpro and the baselines (full Gauss-Newton, ADAM,
L-BFGSvpro), multilevel in time, and the ``train-surrogate`` command.

Layout: the optimisers (:mod:`train.gnvpro`, ...) on :mod:`train.varpro` and
:mod:`train.base`; :mod:`train.config` (settings), :mod:`train.factories` (optimiser and model
from the settings), :mod:`train.run` (a run: checkpoints, output folder, summaries),
:mod:`train.summary` (error tables), :mod:`train.errors` (exceptions) and :mod:`train.cli`
(options and exit statuses only)."""

from train.adam import Adam
from train.gauss_newton import GaussNewton
from train.gnvpro import GNvpro
from train.lbfgs_vpro import LBFGSvpro
from train.multilevel import Monitor, MultilevelTrainer
from train.varpro import VarProProblem, WorkCounter, solve_inner

__all__ = ["Adam", "GNvpro", "GaussNewton", "LBFGSvpro", "Monitor", "MultilevelTrainer",
           "VarProProblem", "WorkCounter", "solve_inner"]
