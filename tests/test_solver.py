"""The ILO solver and its baselines on the torch reference generators."""

import pytest
import torch

from ilo import IloError
from ilo.engine.problems.operators import Downsample, Inpainting, Noise
from ilo.engine.solver.ilo_solver import ILOConfig, csgm_config, member_seed, pulse_config, solve
from ilo.engine.solver.projections import norms
from ilo.engine.solver.seeds import initial_z


def _truth(gen, n, seed=123):
    with torch.no_grad():
        if gen.has_mapping:
            return gen.synthesize(
                gen.latents_from_z(torch.randn(n, gen.z_dim, generator=torch.Generator().manual_seed(seed)))
            )
        return gen.synthesize(torch.randn(n, 1, gen.z_dim, generator=torch.Generator().manual_seed(seed)))


SHORT = dict(steps=[30, 15], lr=[0.1, 0.01], l1_radius=[None, 0.1])


def test_measurement_loss_falls_round_by_round(dcgan):
    x = _truth(dcgan, 2)
    op = Inpainting.centre_box(64, 2)
    result = solve(op.A(x), op, dcgan, ILOConfig(end_stage=3, **SHORT))
    finals = [curve[-1].mean().item() for curve in result.loss_curves]
    assert len(finals) == 4 and all(b < a for a, b in zip(finals, finals[1:]))
    assert (result.best_round == 3).all()
    # the returned images are the best iterates: their loss is the recorded minimum

    assert torch.allclose(op.data_fit(result.images, op.A(x)), result.best_loss, rtol=1e-4)


def test_ilo_beats_csgm_on_observed_pixels(dcgan):
    x = _truth(dcgan, 1, seed=7)
    op = Inpainting.centre_box(64, 1)
    ilo = solve(op.A(x), op, dcgan, ILOConfig(end_stage=3, steps=[60, 30], lr=[0.1, 0.01], l1_radius=[None, 0.1]))
    csgm = solve(op.A(x), op, dcgan, csgm_config(steps=[150], restarts=1))
    assert ilo.best_loss.item() < csgm.best_loss.item()


# Float rounding in torch's CPU kernels depends on the batch size, and Adam carries it along, so
# runs of one image alone and in a batch agree only to a rounding-sized amount, measured on a
# 2-core AMD EPYC (Zen 3): 1.2e-3 here (round 0 runs 3 images x 3 starts = 9 rows together
# against 3 alone, pruned to 6 and 3; 4.8e-6 when starts ran one after another), 6.5e-4 with
# eq. 4's noise. A different random start (or another image's noise stream) moves the result by
# more than 1 (1.7 and 2.3), so these bounds still tell "same start, same noise" from
# "different" by more than two orders of magnitude.
BATCH_ROUNDING = 5e-3
BATCH_ROUNDING_NOISY = 1e-2


def test_result_does_not_depend_on_the_batch(sg2):
    x = _truth(sg2, 3)
    op = Downsample(2)
    y = op.A(x)
    config = ILOConfig(end_stage=2, switch="plateau", plateau_window=5, plateau_tol=0.05, **SHORT)
    together = solve(y, op, sg2, config, image_seeds=[10, 11, 12])
    alone = solve(y[1:2], op, sg2, config, image_seeds=[11])
    assert torch.allclose(together.images[1:2], alone.images, atol=BATCH_ROUNDING)
    assert torch.allclose(together.wplus[1:2], alone.wplus, atol=BATCH_ROUNDING)


def test_each_image_draws_its_own_denoisingnoise_stream(sg2):
    # eq. 4 adds fresh noise at every evaluation; an image's draws must be exactly the same
    # whichever batch it is in, evaluation after evaluation
    from ilo.engine.solver.objective import Objective
    from ilo.engine.solver.seeds import noise_stream

    op, config = Noise(0.1), ILOConfig()
    y = torch.zeros(3, 3, 32, 32)
    together = Objective(op, y, config, None, [noise_stream(s) for s in (4, 5, 6)])
    alone = Objective(op, y[2:], config, None, [noise_stream(6)])
    for _ in range(3):
        a, b = together.draw_noise(3, 32), alone.draw_noise(1, 32)
        assert torch.equal(a[2:], b) and not torch.equal(a[1:2], b)


def test_denoising_result_does_not_depend_on_the_batch(sg2):
    x = _truth(sg2, 3)
    op = Noise(0.1)
    y = op.measure(x, torch.Generator().manual_seed(1))
    config = ILOConfig(end_stage=1, steps=[10, 5], restarts=1)
    together = solve(y, op, sg2, config, image_seeds=[4, 5, 6])
    alone = solve(y[2:], op, sg2, config, image_seeds=[6])
    assert torch.allclose(together.images[2:], alone.images, atol=BATCH_ROUNDING_NOISY)


def test_seeded_runs_repeat_exactly(sg2):
    x = _truth(sg2, 2)
    op = Inpainting.random_pixels(32, 2, 0.3, generator=torch.Generator().manual_seed(0))
    a = solve(op.A(x), op, sg2, ILOConfig(end_stage=1, **SHORT))
    b = solve(op.A(x), op, sg2, ILOConfig(end_stage=1, **SHORT))
    assert torch.equal(a.images, b.images) and torch.equal(a.wplus, b.wplus)


def test_spherical_projection_keeps_latent_norms(sg2):
    x = _truth(sg2, 1)
    op = Downsample(2)
    result = solve(op.A(x), op, sg2, pulse_config(steps=[20]), image_seeds=[5])
    assert len(result.loss_curves) == 1 and result.best_round.item() == 0
    # the optimised variable is the Gaussianised z (w+ is its image under the latent statistics),
    # one vector per layer: each must end on the sphere it started on, having moved along it
    z = sg2.latent_stats().from_w(result.wplus)
    z0 = initial_z(sg2, [5], 0)
    assert z.shape == z0.shape == (1, sg2.n_latent, sg2.style_dim)
    # 20 unprojected Adam steps of lr 0.1 move the norms by 4-22%; undoing the leaky ReLU and
    # the statistics in float32 leaves them 1.2e-7 from the start here
    assert torch.allclose(norms(z, 1), norms(z0, 1), rtol=1e-4, atol=0)
    assert (norms(z - z0, 1) > 1).all()  # it moved (3.5-4.2): one that stood still would keep its norm trivially


def test_l1_radius_bounds_the_state_change(dcgan):
    x = _truth(dcgan, 1)
    op = Inpainting.centre_box(64, 1)
    config = ILOConfig(end_stage=1, steps=[10, 20], lr=[0.1, 0.5], l1_radius=[None, 0.01])
    result = solve(op.A(x), op, dcgan, config)
    start, final = result.round_starts[1][0], result.states[1][0]
    assert final.shape == (1, 512, 4, 4) and not torch.equal(start, final)
    assert (final - start).abs().sum() <= 0.01 * start.abs().sum() * (1 + 1e-5)


def test_divergence_is_a_clear_error(sg2):
    x = _truth(sg2, 1)
    op = Downsample(2)
    with pytest.raises(IloError, match="diverged"):
        solve(op.A(x), op, sg2, ILOConfig(end_stage=2, steps=[3, 5], lr=[0.1, 1e20], l1_radius=None))


@pytest.mark.parametrize("lr", [float("nan"), 0.0, -1.0, float("inf"), 1e38])
def test_invalid_learning_rate_is_refused(lr):
    with pytest.raises(IloError, match="learning rates must be positive"):
        ILOConfig(lr=[lr, 0.01])


def test_csgm_restarts_keep_the_best_per_image(dcgan):
    x = _truth(dcgan, 2)
    op = Downsample(2)
    one = solve(op.A(x), op, dcgan, csgm_config(steps=[20], restarts=1))
    three = solve(op.A(x), op, dcgan, csgm_config(steps=[20], restarts=3))
    assert (three.best_loss <= one.best_loss + 1e-7).all()


def test_the_solvers_adam_is_torchs_adam_step_for_step():
    """`ilo.engine.solver.adam.Adam` (no torch._dynamo import) against `torch.optim.Adam`, the
    reference: the same updates to the bit, with the learning rate changing between steps and a
    parameter without a gradient left alone, as the solver uses it."""
    from ilo.engine.solver.adam import Adam

    g = torch.Generator().manual_seed(0)
    ours = [torch.randn(3, 5, generator=g), torch.randn(2, 4, 4, generator=g), torch.randn(7, generator=g)]
    theirs = [p.clone() for p in ours]
    mine, reference = Adam(ours, lr=0.1), torch.optim.Adam(theirs, lr=0.1, betas=(0.9, 0.999))
    for step in range(6):
        lr = 0.1 * (1 - step / 6)
        mine.lr = lr
        for group in reference.param_groups:
            group["lr"] = lr
        for i, (a, b) in enumerate(zip(ours, theirs)):
            grad = torch.randn(a.shape, generator=g) if not (i == 2 and step % 2) else None
            a.grad, b.grad = grad, None if grad is None else grad.clone()
        mine.step()
        reference.step()
        mine.zero_grad()
        reference.zero_grad(set_to_none=True)
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b)
            assert a.grad is None


def test_batched_starts_match_starts_one_after_another(dcgan):
    """Round 0's starts as one batch of images x starts (the fast path) against the reference:
    images one at a time, starts one after the other (`max_rows=1`), and the mixes between."""
    x = _truth(dcgan, 2, seed=5)
    op = Inpainting.centre_box(64, 2)
    config = ILOConfig(end_stage=1, steps=[12, 6], restarts=3, prune_starts_at=[])
    batched = solve(op.A(x), op, dcgan, config, image_seeds=[3, 4])
    for max_rows in (1, 2, 3, 4):
        split = solve(op.A(x), op, dcgan, config, image_seeds=[3, 4], max_rows=max_rows)
        assert torch.allclose(batched.images, split.images, atol=BATCH_ROUNDING), max_rows
        assert torch.equal(batched.best_round, split.best_round)
        assert [c.shape for c in batched.loss_curves] == [c.shape for c in split.loss_curves]
    # pruned, the starts halve within what runs together: a cap that keeps one image's starts
    # together (>= 3 rows) splits only the images, and changes nothing
    pruned = ILOConfig(end_stage=1, steps=[12, 6], restarts=3, prune_starts_at=[0.25, 0.5])
    whole = solve(op.A(x), op, dcgan, pruned, image_seeds=[3, 4])
    split = solve(op.A(x), op, dcgan, pruned, image_seeds=[3, 4], max_rows=3)
    assert torch.allclose(whole.images, split.images, atol=BATCH_ROUNDING)


def test_an_ensemble_is_the_mean_of_its_members_solved_one_by_one(dcgan):
    """The fast path (every member of every image in one batch) against the reference: each
    member solved alone with its seed, the images averaged. Member 0 is the plain solve, the
    members differ (their own starts and held-out shares), and a memory cap changes nothing."""
    x = _truth(dcgan, 2, seed=5)
    op = Inpainting.random_pixels(64, 2, keep=0.3, generator=torch.Generator().manual_seed(1))
    y = op.A(x)
    config = ILOConfig(end_stage=1, steps=[12, 6], restarts=2, prune_starts_at=[0.5], hold_out=0.1, ensemble=3)
    together = solve(y, op, dcgan, config, image_seeds=[3, 4])
    single = ILOConfig(end_stage=1, steps=[12, 6], restarts=2, prune_starts_at=[0.5], hold_out=0.1)
    members = [solve(y, op, dcgan, single, image_seeds=[member_seed(s, m) for s in (3, 4)]) for m in range(3)]
    assert torch.allclose(together.images, torch.stack([m.images for m in members]).mean(0), atol=BATCH_ROUNDING)
    assert torch.equal(together.member_rounds, torch.stack([m.best_round for m in members], 1))
    assert torch.allclose(together.best_loss, torch.stack([m.best_loss for m in members]).mean(0), rtol=1e-2)
    assert torch.equal(together.best_round, members[0].best_round) and together.held_out
    assert torch.allclose(together.wplus, members[0].wplus, atol=BATCH_ROUNDING)
    assert (members[1].images - members[0].images).abs().max() > 0.1  # other starts, other results
    capped = solve(y, op, dcgan, config, image_seeds=[3, 4], max_rows=2)
    assert torch.allclose(capped.images, together.images, atol=BATCH_ROUNDING)
    assert [c.shape[1] for c in together.loss_curves] == [2, 2]
    with pytest.raises(IloError, match="ensemble must be a whole number"):
        ILOConfig(ensemble=0)


def test_ensembles_of_nearby_seeds_share_no_member():
    # the members of `--seed s` must not be the plain solves (or members) of another --seed
    from ilo.engine.problems.tasks import name_seed

    for name in ("face", "gen00", "astronaut"):
        seeds = [{member_seed(name_seed(s, name), m) for m in range(5)} for s in range(6)]
        assert all(len(group) == 5 for group in seeds)
        assert len(set().union(*seeds)) == 30


def test_pruned_starts_run_on_fewer_rows_and_stay_batch_independent(dcgan):
    x = _truth(dcgan, 3, seed=9)
    op = Downsample(2)
    config = ILOConfig(end_stage=1, steps=[16, 4], restarts=4, prune_starts_at=[0.25, 0.5])
    rows: dict[int, list[int]] = {}
    together = solve(
        op.A(x),
        op,
        dcgan,
        config,
        image_seeds=[1, 2, 3],
        progress=lambda k, step, steps, measured: rows.setdefault(k, []).append(measured.shape[0]),
    )
    assert rows[0] == [12] * 4 + [6] * 4 + [3] * 8 and rows[1] == [3] * 4
    alone = solve(op.A(x)[1:2], op, dcgan, config, image_seeds=[2])
    assert torch.allclose(together.images[1:2], alone.images, atol=BATCH_ROUNDING)
    unpruned = solve(
        op.A(x), op, dcgan, ILOConfig(end_stage=1, steps=[16, 4], restarts=4, prune_starts_at=[]), image_seeds=[1, 2, 3]
    )
    assert not torch.equal(unpruned.images, together.images)


def test_bad_pruning_fractions_are_refused():
    for fractions in ([0.0], [0.5, 0.25], [1.0], [0.3, 0.3]):
        with pytest.raises(IloError, match="prune_starts_at"):
            ILOConfig(prune_starts_at=fractions)


class _CountingRows:
    """Wraps a generator view and records the rows of every stage run (one per step)."""

    def __init__(self, gen):
        self._gen, self.rows = gen, []

    def __getattr__(self, name):
        return getattr(self._gen, name)

    def run_stages(self, state, wplus, noises, start, end=None):
        self.rows.append(wplus.shape[0])
        return self._gen.run_stages(state, wplus, noises, start, end)


@pytest.mark.parametrize("restarts, prune", [(1, []), (3, [0.25, 0.5])])
def test_stopped_images_leave_the_batch_with_the_same_results(sg2, restarts, prune):
    # the fast path (an image that plateaued leaves the batch) against the reference (it stays,
    # frozen): same images, latents and records; the fast path runs fewer rows
    x = _truth(sg2, 3)
    op = Downsample(2)
    y = op.A(x)
    base = dict(
        end_stage=2,
        switch="plateau",
        plateau_window=4,
        plateau_tol=0.02,
        restarts=restarts,
        prune_starts_at=prune,
        steps=[40, 30],
        lr=[0.1, 0.01],
        l1_radius=[None, 0.1],
    )
    fast_gen, slow_gen = _CountingRows(sg2), _CountingRows(sg2)
    fast = solve(y, op, fast_gen, ILOConfig(**base), image_seeds=[10, 11, 12])
    slow = solve(y, op, slow_gen, ILOConfig(**base, retire_stopped=False), image_seeds=[10, 11, 12])
    assert sum(fast_gen.rows) < sum(slow_gen.rows) and min(fast_gen.rows) < 3  # some image left early
    assert torch.allclose(fast.images, slow.images, atol=BATCH_ROUNDING)
    assert torch.allclose(fast.wplus, slow.wplus, atol=BATCH_ROUNDING)
    assert torch.equal(fast.best_round, slow.best_round)
    for a, b in zip(fast.states, slow.states):
        assert all(torch.allclose(s, t, atol=BATCH_ROUNDING) for s, t in zip(a, b))
    for a, b in zip(fast.measurement_curves, slow.measurement_curves):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("restarts, prune", [(3, []), (5, [0.1, 0.5])])
def test_latency_counts_round_zero_as_the_solver_runs_it(sg2, restarts, prune):
    # the latency benchmark's seconds per solve count round 0's steps x starts as the solver prunes
    from ilo.engine.bench.latency import start_steps

    config = ILOConfig(steps=[12, 1], restarts=restarts, prune_starts_at=prune, end_stage=0, noise_maps=0)
    counting = _CountingRows(sg2)
    solve(torch.rand(2, 3, 32, 32), Noise(0.1), counting, config)  # round 0 only: one stage run per step
    assert len(counting.rows) == 12
    assert sum(counting.rows) == 2 * start_steps(config, 12)


def test_a_trainable_generator_is_solved_as_a_frozen_one_and_gets_no_weight_gradients():
    # a module straight from training code: its weights require grad. The solve must neither
    # compute their gradients (about a third more backward work) nor leave them on the module.
    import copy

    from conftest import small_dcgan

    trainable = small_dcgan()
    frozen = copy.deepcopy(trainable).requires_grad_(False)
    op = Inpainting.centre_box(16, 2)
    y = op.A(torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    config = ILOConfig(steps=[10, 5], restarts=1)
    a, b = solve(y, op, trainable, config), solve(y, op, frozen, config)
    assert torch.equal(a.images, b.images)
    assert all(p.requires_grad and p.grad is None for p in trainable.parameters())


def test_plateau_switching_stops_on_the_best_loss_not_on_one_noisy_step():
    from ilo.engine.solver.patience import Patience

    patience = Patience(window=3, tol=0.01)
    # image 0 keeps improving with a step up in between (a high learning rate); image 1 is flat
    scores = [[10.0, 5.0], [12.0, 5.0], [9.0, 5.0], [11.0, 5.0], [8.0, 5.0], [8.0, 5.0], [8.0, 5.0], [8.0, 5.0]]
    stopped = [patience.update(torch.tensor(s)).tolist() for s in scores]
    assert [s[1] for s in stopped] == [False, False, False, True, True, True, True, True]  # 3 steps without gain
    assert [s[0] for s in stopped] == [False] * 7 + [True]  # stopped 3 steps after its last gain
    patience.take(torch.tensor([1]))
    assert patience.update(torch.tensor([5.0])).tolist() == [True]
