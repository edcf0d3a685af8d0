"""A small UM-Bridge server for the tests, run as ``python umbridge_test_server.py PORT``.

It uses umbridge's own ``serve_models`` (the server most Python models are served with),
bound to 127.0.0.1 only. Models:

``forward``  inputs [2, 1], outputs [3, 1]: c = [y0 + y1, y0 * y1, sin(y2)], [y0 + y1 + y2]
``fails``    raises ValueError (umbridge answers HTTP 500 with a plain-text body)
``badsize``  returns 2 numbers where it declares 3 (umbridge answers with a JSON error)
``slow``     sleeps 5 s, then answers like ``forward``
``noeval``   does not support Evaluate
``dcr``      the DCR solver on a coarse mesh (:data:`DCR_SETTINGS`), served as a user would
"""

from __future__ import annotations

import functools
import math
import sys
import time

import aiohttp.web
import umbridge


class Forward(umbridge.Model):
    def __init__(self, name: str = "forward", delay: float = 0.0):
        super().__init__(name)
        self.delay = delay

    def get_input_sizes(self, config):
        return [2, 1]

    def get_output_sizes(self, config):
        return [3, 1]

    def __call__(self, parameters, config):
        time.sleep(self.delay)
        (a, b), (c,) = parameters
        scale = float(config.get("scale", 1.0))
        return [[scale * (a + b), a * b, math.sin(c)], [a + b + c]]

    def supports_evaluate(self):
        return True


class Fails(Forward):
    def __call__(self, parameters, config):
        raise ValueError("negative stiffness at node 7")


class BadSize(Forward):
    def __call__(self, parameters, config):
        return [[1.0, 2.0], [3.0]]


class NoEval(Forward):
    def supports_evaluate(self):
        return False


#: the coarse DCR problem served as model "dcr"
DCR_SETTINGS = {"n_cells": [12, 12, 6], "n_receivers": 3}


class DCR(umbridge.Model):
    def __init__(self):
        super().__init__("dcr")
        from solvers import make_solver

        self.solver = make_solver("dcr", **DCR_SETTINGS)

    def get_input_sizes(self, config):
        return [self.solver.n_parameters]

    def get_output_sizes(self, config):
        return [self.solver.n_observables]

    def __call__(self, parameters, config):
        return [self.solver.solve(parameters[0]).tolist()]

    def supports_evaluate(self):
        return True


def main(port: int) -> None:
    # umbridge.serve_models listens on every interface; the tests keep it on loopback
    aiohttp.web.run_app = functools.partial(aiohttp.web.run_app, host="127.0.0.1",
                                            print=None)
    umbridge.serve_models([Forward(), Fails("fails"), BadSize("badsize"),
                           Forward("slow", delay=5.0), NoEval("noeval"), DCR()],
                          port=port, max_workers=4)


if __name__ == "__main__":
    main(int(sys.argv[1]))
