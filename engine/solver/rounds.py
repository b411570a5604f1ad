"""The rounds of one solve of a batch: round 0 from random (or learned) starts, each image's best
start chosen, then the intermediate rounds; with each image's best iterate and the records."""

from __future__ import annotations

import torch

from ilo.engine.solver.best_iterates import BestIterates
from ilo.engine.solver.candidates import Candidate, best_start
from ilo.engine.solver.generator_view import GeneratorView
from ilo.engine.solver.objective import Objective
from ilo.engine.solver.round_loop import RoundLoop, SolveSetting
from ilo.engine.solver.round_variables import RoundVariables
from ilo.engine.solver.seeds import initial_z, noise_stream


class Run:
    """The variables, per-image best iterates and records of one solve.

    A run's rows are `slots` x images, slot-major (row = slot * images + image): one slot per
    image in the intermediate rounds, one per remaining random start in round 0."""

    def __init__(self, setting: SolveSetting, objective: Objective):
        self.setting, self.objective = setting, objective
        self.best = BestIterates(setting.images, setting.gen.resolution, objective.y.device)
        self.curves: list[torch.Tensor] = []  # per round: [steps, images] total loss
        self.measured_curves: list[torch.Tensor] = []  # per round: [steps, images] data fit
        self.states: list[tuple] = []  # per round: the input state of its first stage, as optimised
        self.starts: list[tuple] = []  # the same states as each round began
        self.seconds: dict = {}

    def first_round(self, seeds: list[int], starts: range, learned: torch.Tensor | None = None) -> Candidate:
        """Round 0 from the random starts `starts`, as one batch of images x starts (pruned by
        successive halving when the config says so); per image, the variables of its best start.
        `learned` [images, rows, D] stands in for start 0."""
        s, images, device = self.setting, self.setting.images, self.objective.y.device
        rows = torch.arange(images, device=device).repeat(len(starts))
        z0 = torch.cat(
            [learned.cpu() if r == 0 and learned is not None else initial_z(s.gen, seeds, r) for r in starts]
        ).to(device)  # same starts on any device
        group = Run(s, self.objective.take(rows, [noise_stream(seed, r) for r in starts for seed in seeds]))
        noises = [x.expand(len(rows), -1, -1, -1) for x in s.gen.stored_noises()]  # round() copies them
        z, noises, _ = group.round(0, s.latents.start(z0), noises, ())
        self.best.absorb(group.best)
        if not self.curves:  # the records keep the first group's round 0 (per image, its best start's loss)
            self.curves.append(group.curves[0])
            self.measured_curves.append(group.measured_curves[0])
            self.states.append(())
            self.starts.append(())
        with torch.no_grad():
            final_loss = group.objective.op.data_fit(s.gen.synthesize(s.latents.wplus(z), noises), group.objective.y)
        every = Candidate(z=z, noises=noises, final_loss=final_loss)
        # in start (or rank) order: ties stay with the earlier
        return best_start([every.slot(slice(i * images, (i + 1) * images)) for i in range(z.shape[0] // images)])

    def round(
        self, k: int, z: torch.Tensor, noises: list[torch.Tensor], state: tuple
    ) -> tuple[torch.Tensor, list[torch.Tensor], tuple]:
        """Optimise round k's variables; returns the optimised latents, noise maps and input
        state of stage k (fewer rows than given where round 0's starts were pruned)."""
        variables = RoundVariables.begin(
            z, noises, state, _optimised_noises(self.setting.gen, k, self.setting.noise_maps)
        )
        self.starts.append(tuple(variables.start_state))
        loop = RoundLoop(k, self.setting, self.objective, self.best, variables)
        z, noises, state = loop.optimise()
        self.objective = loop.objective
        self.curves.append(torch.stack(loop.curve))
        self.measured_curves.append(torch.stack(loop.measured_curve))
        self.states.append(state)
        return z, noises, state


def _optimised_noises(gen: GeneratorView, k: int, first: int):
    """The noise maps round k optimises: round 0 the first `first`, round k of those the stages
    from k on read."""
    if k == 0:
        return range(first)
    return [i for spec in gen.specs[k:] for i in spec.noise_indices if i < first]
