"""The guidelines lab: ShuffleNetV2's G1-G4 experiments and the depthwise study, rerun here.

``run_lab(["g1", ...], LabConfig(...))`` returns one :class:`ExperimentResult` per experiment,
with the paper's numbers beside this machine's and a verdict computed from the measured trend.
"""

from .experiments import EXPERIMENTS, Claim, ExperimentResult, LabConfig, run_lab

__all__ = ["EXPERIMENTS", "Claim", "ExperimentResult", "LabConfig", "run_lab"]
