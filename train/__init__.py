"""VarPro training of separable surrogates: GNvpro and the baselines (full Gauss-Newton, ADAM,
L-BFGSvpro), multilevel in time, and the ``train-surrogate`` command (:mod:`train.cli`)."""

from train.adam import Adam
from train.gauss_newton import GaussNewton
from train.gnvpro import GNvpro
from train.lbfgs_vpro import LBFGSvpro
from train.multilevel import Monitor, MultilevelTrainer
from train.varpro import VarProProblem, WorkCounter, solve_inner

__all__ = ["Adam", "GNvpro", "GaussNewton", "LBFGSvpro", "Monitor", "MultilevelTrainer",
           "VarProProblem", "WorkCounter", "solve_inner"]
