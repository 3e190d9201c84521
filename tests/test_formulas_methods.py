"""Each method's training formula (docs/method.md, "Methods" and "Every training
loss is a *sum* over the examples drawn divided by B"), recomputed in plain torch
under NON-uniform counts, where a plain mean or a wrong set of examples gives a
different gradient.

Every test builds its own :class:`TrainContext` with a ``draw`` that hands out
distinct dataset indices and records them, and finds which rows each modality's
encoder received from its input (every input row is unique), so the expected
values depend on nothing but the documented formula.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dus_gym.methods import JointMethod, MLAMethod, OGMGEMethod, TrainContext
from dus_gym.models import MultimodalModel, build_model

SHAPES = [(5,), (4,), (3,)]
NUM_CLASSES = 3
N = 120
B = 8


class Draws:
    """``ctx.draw``: distinct dataset indices, in order, each call recorded."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        self.pos = 0
        self.calls: list[torch.Tensor] = []

    def __call__(self, n: int) -> torch.Tensor:
        idx = self.order[self.pos : self.pos + n]
        assert len(idx) == n, "test data too small for the draws"
        self.pos += n
        self.calls.append(idx.clone())
        return idx


def data(seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(N, *s, generator=gen) for s in SHAPES]
    labels = torch.randint(NUM_CLASSES, (N,), generator=gen)
    return inputs, labels


def model(shared_head: bool = False, feature_dim: int = 6, seed: int = 1) -> MultimodalModel:
    return build_model(SHAPES, NUM_CLASSES, torch.Generator().manual_seed(seed), feature_dim=feature_dim,
                       shared_head=shared_head)


def context(m: MultimodalModel, inputs, labels, draws, lr: float = 0.1, momentum: float = 0.0) -> TrainContext:
    opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=momentum)
    return TrainContext(m, opt, inputs, labels, draws, torch.Generator().manual_seed(3), B)


def rows_seen(m: MultimodalModel, inputs: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Per modality, the dataset indices of each batch its encoder receives (forward pre-hooks)."""
    seen: list[list[torch.Tensor]] = [[] for _ in inputs]

    def hook(j: int):
        def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach()
            match = (x[:, None, :] == inputs[j][None, :, :]).all(dim=-1)  # (n, N)
            assert bool((match.sum(dim=1) == 1).all()), "every encoder input row is one dataset row"
            seen[j].append(match.float().argmax(dim=1))

        return record

    for j, enc in enumerate(m.encoders):
        enc.register_forward_pre_hook(hook(j))
    return seen


def grad_of(p: torch.Tensor) -> torch.Tensor:
    """``p.grad``, which the step under test must have set."""
    assert p.grad is not None, "no gradient"
    return p.grad


def linear_head(m: MultimodalModel) -> nn.Linear:
    """The model's first (with ``shared_head=True``, its only) head: a linear layer."""
    head = m.heads[0]
    assert isinstance(head, nn.Linear), type(head)
    return head


def params(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.named_parameters()}


def assert_params_close(got: nn.Module, expected: nn.Module, atol: float = 1e-6) -> None:
    for (name, p), q in zip(got.named_parameters(), expected.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=atol, msg=name)


# -- joint: paired draws, modality j on n_j of them, fused cross-entropy summed / B ---------


def joint_reference(ref: MultimodalModel, inputs, labels, idx: torch.Tensor, present: list[torch.Tensor]):
    """Plain torch: fused logits of the P drawn examples, modality j adding its
    logits on the examples in ``present[j]`` only; summed cross-entropy / B."""
    fused = torch.zeros(len(idx), NUM_CLASSES)
    for j, x in enumerate(inputs):
        mask = torch.isin(idx, present[j]).float()[:, None]
        fused = fused + mask * ref.branch_logits(j, x[idx])
    return F.cross_entropy(fused, labels[idx], reduction="sum") / B


@pytest.mark.parametrize("counts", [[3, 13, 8], [16, 2, 5], [1, 1, 9], [8, 2, 5]])  # the last: P = B
def test_joint_loss_and_update_under_nonuniform_counts(counts: list[int]) -> None:
    inputs, labels = data()
    m = model()
    ref = copy.deepcopy(m)
    draws = Draws(N)
    seen = rows_seen(m, inputs)
    ctx = context(m, inputs, labels, draws)
    result = JointMethod().train_iteration(ctx, counts)

    P = max(counts)
    assert [len(c) for c in draws.calls] == [P]  # one paired draw of max_j n_j examples
    idx = draws.calls[0]
    present = [s[0] for s in seen]
    for j, n in enumerate(counts):
        assert len(seen[j]) == 1 and len(present[j]) == n  # modality j's encoder sees n_j examples ...
        assert len(set(present[j].tolist())) == n and bool(torch.isin(present[j], idx).all())  # ... of the P drawn
    assert set(present[counts.index(P)].tolist()) == set(idx.tolist())  # the largest count is on every example

    loss = joint_reference(ref, inputs, labels, idx, present)
    assert result.loss.item() == pytest.approx(loss.item(), rel=1e-5)
    ref.zero_grad()
    loss.backward()
    for (name, p), q in zip(m.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=name)
    with torch.no_grad():
        for q in ref.parameters():
            q.sub_(0.1 * grad_of(q))  # plain SGD step
    assert_params_close(m, ref)


def test_joint_sum_over_b_is_not_a_mean() -> None:
    """The documented normalisation, stated directly: a modality's extra samples
    add gradient. Counts (2, 14) and B = 8: the loss is the summed CE / 8, 14/8
    times the mean over the 14 paired examples."""
    inputs, labels = data(seed=5)
    m = model(seed=4)
    ref = copy.deepcopy(m)
    draws = Draws(N, seed=2)
    seen = rows_seen(m, inputs)
    result = JointMethod().train_iteration(context(m, inputs, labels, draws), [2, 14, 14])
    idx = draws.calls[0]
    fused = sum(
        torch.isin(idx, seen[j][0]).float()[:, None] * ref.branch_logits(j, x[idx]) for j, x in enumerate(inputs)
    )
    assert isinstance(fused, torch.Tensor)
    mean = F.cross_entropy(fused, labels[idx])
    assert result.loss.item() == pytest.approx(mean.item() * 14 / B, rel=1e-5)


# -- mla: one optimizer step per modality, in order, each on its own n_j examples -------------


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_mla_alternation_by_hand(momentum: float) -> None:
    inputs, labels = data(seed=1)
    m = model(shared_head=True)
    ref = copy.deepcopy(m)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=momentum)
    draws = Draws(N, seed=1)
    method = MLAMethod()
    ctx = context(m, inputs, labels, draws, momentum=momentum)
    counts = [3, 11, 6]
    losses = [method.train_iteration(ctx, counts).loss.item() for _ in range(2)]

    # one draw per modality, in modality order, of exactly its own n_j examples
    assert [len(c) for c in draws.calls] == counts * 2
    expected = []
    for it in range(2):
        total = 0.0
        for j, x in enumerate(inputs):
            idx = draws.calls[it * len(counts) + j]
            loss = F.cross_entropy(ref.heads[0](ref.features(j, x[idx])), labels[idx], reduction="sum") / B
            ref_opt.zero_grad()
            loss.backward()
            ref_opt.step()  # before the next modality's forward pass
            total += loss.item()
        expected.append(total)
    assert losses == pytest.approx(expected, rel=1e-5)
    assert_params_close(m, ref)


def test_mla_step_sizes_follow_the_counts() -> None:
    """Modality j's own step scales with n_j / B: the head's first update (modality 0,
    n_0 = 16 = 2B) equals two B-sized mean-loss steps' worth of gradient."""
    inputs, labels = data(seed=2)
    m = model(shared_head=True)
    ref = copy.deepcopy(m)
    draws = Draws(N, seed=3)
    head_before = linear_head(m).weight.detach().clone()
    # capture the head after modality 0's step: modality 1's draw happens right after it
    snapshots: list[torch.Tensor] = []

    def draw(n: int) -> torch.Tensor:
        snapshots.append(linear_head(m).weight.detach().clone())
        return draws(n)

    MLAMethod().train_iteration(context(m, inputs, labels, draw), [16, 4, 4])
    idx = draws.calls[0]
    mean_loss = F.cross_entropy(ref.heads[0](ref.features(0, inputs[0][idx])), labels[idx])
    (grad,) = torch.autograd.grad(mean_loss, linear_head(ref).weight)
    torch.testing.assert_close(snapshots[1], head_before - 0.1 * (16 / B) * grad, rtol=1e-5, atol=1e-7)


def test_mla_projection_by_hand() -> None:
    """Head gradient G~ = [dW, db] of modality j becomes G~ P_j, P_j = a (a I + R)^-1,
    R = sum of the other modalities' running correlations R_k (first batch sets R_k,
    then R_k <- beta R_k + (1 - beta) X~^T X~ / n_k), a = alpha * trace(R) / (D + 1)."""
    alpha, beta = 0.05, 0.7
    inputs, labels = data(seed=3)
    m = model(shared_head=True, feature_dim=5)
    ref = copy.deepcopy(m)
    draws = Draws(N, seed=4)
    method = MLAMethod(projection=True, projection_alpha=alpha, projection_beta=beta)
    ctx = context(m, inputs, labels, draws)
    counts = [4, 9, 6]
    for _ in range(2):
        method.train_iteration(ctx, counts)

    head = linear_head(ref)
    R: dict[int, torch.Tensor] = {}
    for it in range(2):
        for j, x in enumerate(inputs):
            idx = draws.calls[it * len(counts) + j]
            features = ref.features(j, x[idx])
            loss = F.cross_entropy(head(features), labels[idx], reduction="sum") / B
            ref.zero_grad()
            loss.backward()
            others = [r for k, r in R.items() if k != j]
            if others:
                Rs = torch.stack(others).sum(0).double()
                eye = torch.eye(Rs.shape[0], dtype=torch.float64)
                a = alpha * torch.trace(Rs) / Rs.shape[0]
                P = a * torch.linalg.inv(a * eye + Rs)
                G = torch.cat([grad_of(head.weight), grad_of(head.bias)[:, None]], dim=1).double() @ P
                head.weight.grad = G[:, :-1].float()
                head.bias.grad = G[:, -1].float()
            xt = torch.cat([features.detach(), torch.ones(len(idx), 1)], dim=1)
            corr = xt.T @ xt / len(idx)
            R[j] = corr if j not in R else beta * R[j] + (1 - beta) * corr
            with torch.no_grad():
                for p in ref.parameters():
                    if p.grad is not None:  # the other encoders have no gradient in j's step
                        p.sub_(0.1 * p.grad)
    assert sorted(method.feature_correlation) == [0, 1, 2]
    for k in R:
        torch.testing.assert_close(method.feature_correlation[k], R[k], rtol=1e-5, atol=1e-6)
    assert_params_close(m, ref, atol=1e-5)
    # the projection matters here: without it the head ends elsewhere
    plain = copy.deepcopy(model(shared_head=True, feature_dim=5))
    draws2 = Draws(N, seed=4)
    for _ in range(2):
        MLAMethod().train_iteration(context(plain, inputs, labels, draws2), counts)
    assert (linear_head(plain).weight - linear_head(m).weight).abs().max() > 1e-3


def test_mla_fusion_weights_each_example_by_its_own_entropies() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(3, 5, 4, generator=gen)  # (M, N, C)
    fused = MLAMethod().fuse(logits)
    for i in range(5):
        p = [torch.softmax(logits[j, i], 0) for j in range(3)]
        entropy = torch.stack([-(q * q.log()).sum() for q in p])
        w = torch.exp(-entropy) / torch.exp(-entropy).sum()
        torch.testing.assert_close(fused[i], sum(w[j] * logits[j, i] for j in range(3)))


def test_joint_fusion_is_the_sum_of_branch_logits() -> None:
    logits = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(JointMethod().fuse(logits), logits[0] + logits[1] + logits[2])


# -- ogm_ge: coefficients from per-example scores, on the dominant encoders only ------------


def ogm_setup(alpha: float, noise: bool, counts: list[int], seed: int = 0):
    """An OGM-GE iteration and, on a twin model with the same draws, the joint one."""
    inputs, labels = data(seed=seed)
    m = model(feature_dim=16, seed=seed + 10)
    twin = copy.deepcopy(m)
    ref = copy.deepcopy(m)
    seen = rows_seen(m, inputs)
    method = OGMGEMethod(alpha=alpha, noise=noise)
    method.train_iteration(context(m, inputs, labels, Draws(N, seed)), counts)
    JointMethod().train_iteration(context(twin, inputs, labels, Draws(N, seed)), counts)
    # s(j): mean true-class probability of modality j's own branch over its own n_j examples
    with torch.no_grad():
        s = torch.stack([
            torch.softmax(ref.branch_logits(j, x[seen[j][0]]), 1).gather(1, labels[seen[j][0]][:, None]).mean()
            for j, x in enumerate(inputs)
        ])
    return m, twin, method, s


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ogm_ge_coefficients_and_where_they_apply(seed: int) -> None:
    alpha, counts = 4.0, [3, 12, 7]
    m, twin, method, s = ogm_setup(alpha, False, counts, seed)
    expected = []
    for j in range(3):
        ratio = (s[j] / ((s.sum() - s[j]) / 2)).item()
        expected.append(1 - math.tanh(alpha * (ratio - 1)) if ratio > 1 else 1.0)
    assert method.last_coefficients is not None
    assert method.last_coefficients.tolist() == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert min(expected) < 0.95  # a modality is damped in this case
    for (name, p), q in zip(m.named_parameters(), twin.parameters()):
        enc = int(name.split(".")[1]) if name.startswith("encoders.") else None
        k = expected[enc] if enc is not None else 1.0  # heads are never modulated
        # the step applied k * g: p_new - p_old = k * (q_new - q_old); compare gradients instead
        torch.testing.assert_close(p.grad, k * q.grad, rtol=1e-4, atol=1e-7, msg=name)


def test_ogm_ge_noise_has_the_unmodulated_gradients_std_on_every_encoder_only() -> None:
    alpha, counts = 100.0, [3, 12, 7]
    noisy, twin, method, _ = ogm_setup(alpha, True, counts, seed=1)
    k = method.last_coefficients.tolist()
    assert min(k) < 0.3  # strongly damped: std(k g) and std(g) differ a lot
    for (name, p), q in zip(noisy.named_parameters(), twin.parameters()):
        if not name.startswith("encoders."):
            torch.testing.assert_close(p.grad, q.grad, msg=name)  # no noise on the heads
            continue
        j = int(name.split(".")[1])
        noise = p.grad - k[j] * q.grad
        assert noise.abs().max() > 0, name  # every encoder tensor, damped or not
        if q.grad.numel() >= 500:
            assert noise.std().item() == pytest.approx(q.grad.std().item(), rel=0.12), name


# -- what the first mutation run left alive -------------------------------------------------


def test_ogm_coefficients_per_row_of_a_batch() -> None:
    from dus_gym.methods.ogm_ge import ogm_coefficients

    score = torch.tensor([[0.9, 0.3, 0.6], [0.2, 0.2, 0.8]])  # two runs, M = 3
    k = ogm_coefficients(score, alpha=1.0)
    # row 1: 0.9 / 0.45 = 2 (damped), 0.3 / 0.75, 0.6 / 0.6 = 1 (not); row 2: 0.8 / 0.2 = 4 (damped)
    expected = [[1 - math.tanh(1.0), 1.0, 1.0], [1.0, 1.0, 1 - math.tanh(3.0)]]
    torch.testing.assert_close(k, torch.tensor(expected))
    torch.testing.assert_close(ogm_coefficients(score[1], alpha=1.0), torch.tensor(expected[1]))
    for bad in (torch.tensor(0.5), torch.tensor([0.5])):
        with pytest.raises(ValueError, match="M >= 2"):
            ogm_coefficients(bad, 0.5)


def test_method_defaults_and_limits() -> None:
    from dus_gym.methods import make_method

    ogm = OGMGEMethod()
    assert (ogm.alpha, ogm.noise, ogm.last_coefficients) == (0.5, True, None)
    assert OGMGEMethod(alpha=0.0).alpha == 0.0  # 0 is allowed: no modulation
    mla = MLAMethod()
    assert (mla.projection, mla.projection_alpha, mla.projection_beta) == (False, 1e-3, 0.9)
    assert MLAMethod(projection=True, projection_beta=0.0).projection_beta == 0.0
    with pytest.raises(ValueError, match=r"unknown keyword arguments \['alpah'\]; valid: \['alpha', 'noise'\]"):
        make_method("ogm_ge", alpah=0.1)
    with pytest.raises(ValueError, match=r"valid: \['projection', 'projection_alpha', 'projection_beta'\]"):
        make_method("mla", beta=0.1)
    with pytest.raises(ValueError, match=r"valid: \[\]"):
        make_method("joint", alpha=0.1)


class OddEncoder(nn.Module):
    """An encoder with a one-element and a two-element parameter (GE noise: none, and some),
    and, first in order, a parameter that gets no gradient (skipped, not the end of the encoder)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(3))
        self.lin = nn.Linear(d_in, d_out)
        self.scale = nn.Parameter(torch.tensor(1.5))
        self.pair = nn.Parameter(torch.tensor([0.7, -0.4]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.lin(x))
        return torch.cat([h[:, :2] * self.pair, h[:, 2:]], dim=1) * self.scale


def test_ge_noise_skips_one_element_tensors_only() -> None:
    inputs, labels = data(seed=4)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        m = MultimodalModel([OddEncoder(s[0], 6) for s in SHAPES], 6, NUM_CLASSES)
    twin = copy.deepcopy(m)
    method = OGMGEMethod(alpha=2.0, noise=True)
    method.train_iteration(context(m, inputs, labels, Draws(N, 5)), [2, 9, 5])
    JointMethod().train_iteration(context(twin, inputs, labels, Draws(N, 5)), [2, 9, 5])
    assert method.last_coefficients is not None
    k = method.last_coefficients.tolist()
    for j in range(3):
        ours, theirs = m.encoders[j], twin.encoders[j]
        assert isinstance(ours, OddEncoder) and isinstance(theirs, OddEncoder)
        assert ours.unused.grad is None
        assert (grad_of(ours.lin.weight) - k[j] * grad_of(theirs.lin.weight)).abs().max() > 0  # noise after the gap
        assert torch.isfinite(grad_of(ours.scale)).all()
        torch.testing.assert_close(ours.scale.grad, k[j] * grad_of(theirs.scale))  # one element: no noise
        assert (grad_of(ours.pair) - k[j] * grad_of(theirs.pair)).abs().min() > 0  # two elements: noise


def test_mla_projection_needs_a_linear_head_with_a_bias() -> None:
    inputs, labels = data()
    for head in (nn.Linear(6, NUM_CLASSES, bias=False), nn.Sequential(nn.Linear(6, NUM_CLASSES))):
        m = model(shared_head=True)
        m.heads[0] = head
        with pytest.raises(TypeError, match="mla projection needs a linear head with a bias"):
            MLAMethod(projection=True).train_iteration(context(m, inputs, labels, Draws(N)), [2, 3, 4])
