"""Each method and ablation changes exactly the part its name says."""

from dataclasses import replace

import pytest
import torch

from byol.config import Config
from byol.core.errors import ByolError
from byol.data.views import Views
from byol.losses import byol_loss, nt_xent
from byol.methods import BYOL, SimCLR, build_learner

V1, V2 = torch.randn(6, 3, 16, 16), torch.randn(6, 3, 16, 16)


def learner(method: str, **changes):
    torch.manual_seed(0)
    config = Config(method=method, image_size=16, width=1 / 16, projector_hidden=32, projection_dim=8,
                    predictor_hidden=32, **changes)
    return build_learner(config)


def train_step(model) -> None:
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=0.5)
    model.loss(V1, V2).backward()
    optimizer.step()


def same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_tau0_makes_the_target_equal_the_online_network_after_every_update():
    model = learner("byol-tau0")
    for _ in range(2):
        train_step(model)
        assert not same_weights(model.target, model.online)
        assert model.update_target(0.99) == 0.0  # the scheduled rate is ignored
        assert same_weights(model.target, model.online)


def test_tau1_keeps_the_random_target_for_ever():
    model = learner("byol-tau1")
    start = {k: v.clone() for k, v in model.target.named_parameters()}
    for _ in range(2):
        train_step(model)
        assert model.update_target(0.5) == 1.0
    assert all(torch.equal(v, start[k]) for k, v in model.target.named_parameters())


def test_without_a_predictor_the_online_projection_regresses_the_target_directly():
    model = learner("byol-no-predictor")
    assert not list(model.predictor.parameters())
    z_1, z_2 = model.online(V1), model.online(V2)
    with torch.no_grad():
        t_1, t_2 = model.target(V1), model.target(V2)
    torch.testing.assert_close(model.loss(V1, V2), byol_loss(z_1, z_2, t_1, t_2))


def test_without_stop_gradient_there_is_no_target_and_both_branches_are_trained():
    model = learner("byol-no-stopgrad")
    assert model.target is None and model.update_target(0.99) is None
    z_1, z_2 = model.online(V1), model.online(V2)
    expected = byol_loss(model.predictor(z_1), model.predictor(z_2), z_1, z_2)
    torch.testing.assert_close(model.loss(V1, V2), expected)
    # the gradient differs from BYOL's with the same weights and a target equal to online
    with_stop = learner("byol-tau0")
    with_stop.load_state_dict({k: v for k, v in model.state_dict().items()}, strict=False)
    with_stop.update_target(0.0)
    model.loss(V1, V2).backward()
    with_stop.loss(V1, V2).backward()
    assert not torch.allclose(model.encoder.conv1.weight.grad, with_stop.encoder.conv1.weight.grad)


def test_simsiam_is_byol_with_tau_0_and_a_bottleneck_predictor():
    model = learner("simsiam")
    assert isinstance(model, BYOL) and model.fixed_tau == 0.0
    assert model.predictor[0].out_features == 8 // 4


def test_simclr_has_one_network_and_the_nt_xent_loss():
    model = learner("simclr", temperature=0.2)
    assert isinstance(model, SimCLR) and set(model.trained_modules()) == {"online"}
    assert model.update_target(0.99) is None and not hasattr(model, "target")
    torch.testing.assert_close(model.loss(V1, V2), nt_xent(model.online(V1), model.online(V2), 0.2))


def test_the_hybrid_adds_the_weighted_nt_xent_of_the_online_projections():
    from tests.test_losses import slow_nt_xent

    hybrid, plain = learner("byol+simclr", nt_xent_weight=0.3, temperature=0.5), learner("byol")
    plain.load_state_dict(hybrid.state_dict())  # the same networks, BYOL's loss alone
    with torch.no_grad():
        z_1, z_2 = hybrid.online(V1), hybrid.online(V2)
        added = hybrid.loss(V1, V2) - plain.loss(V1, V2)
    assert added.item() == pytest.approx(0.3 * slow_nt_xent(z_1, z_2, 0.5), rel=1e-4)


def test_a_new_method_is_one_class_and_one_registry_line(monkeypatch):
    """A method that takes its own config key (here, the projection's scale in the loss) is
    built by build_learner and trained by pretrain's code path without another change."""
    from byol import methods
    from byol.methods.base import Method

    class ScaledCosine(Method):  # online network only: pull the two views' projections together
        def __init__(self, encoder, *, scale: float = 1.0, **options):
            super().__init__(encoder, **options)
            self.scale = scale

        @classmethod
        def options_from(cls, config):
            return dict(scale=config.temperature)

        def loss(self, view_1, view_2, small=None):
            z_1, z_2 = self.online(view_1), self.online(view_2)
            return self.scale * (2 - 2 * torch.nn.functional.cosine_similarity(z_1, z_2)).mean()

    monkeypatch.setitem(methods.METHODS, "scaled-cosine", (ScaledCosine, {}))
    model = learner("scaled-cosine", temperature=3.0)
    assert isinstance(model, ScaledCosine) and model.scale == 3.0
    z_1, z_2 = model.online(V1), model.online(V2)
    expected = 3.0 * (2 - 2 * (z_1 * z_2).sum(1) / (z_1.norm(dim=1) * z_2.norm(dim=1)))
    torch.testing.assert_close(model.loss(V1, V2), expected.mean())


def test_an_unknown_method_is_refused_with_the_choices():
    with pytest.raises(ByolError, match="unknown method 'byol-tau2': choose one of byol, byol-no-predictor"):
        learner("byol-tau2")


def test_head_batchnorm_switch_removes_batchnorm_from_projector_and_predictor_only():
    def norms(module):
        return [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm1d)]

    with_bn, without_bn = learner("byol"), learner("byol", head_batchnorm=False)
    assert len(norms(with_bn.online.projector)) == len(norms(with_bn.predictor)) == 1
    assert norms(without_bn.online.projector) == norms(without_bn.predictor) == norms(without_bn.target) == []
    encoder_norms = [m for m in without_bn.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert encoder_norms  # the encoder keeps its own
    without_bn.loss(V1, V2).backward()


@pytest.mark.parametrize("method", ["byol", "simclr"])
def test_crop_min_scale_bounds_the_crops_of_both_views(method):
    views = learner(method, crop_min_scale=1.0).views
    assert [spec.crop_scale for spec in views.specs] == [(1.0, 1.0)] * 2
    image = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8).expand(32, -1, -1, -1)
    plain = [replace(spec, jitter_p=0.0, grayscale_p=0.0, solarize_p=0.0) for spec in views.specs]
    for view in Views(*plain)(image.contiguous()):
        # the whole image every time, flipped or not: two distinct views at most
        assert len({tuple(v.flatten().tolist()) for v in view}) <= 2
    assert [spec.crop_scale for spec in learner(method).views.specs] == [(0.08, 1.0)] * 2


@pytest.mark.parametrize("method", ["byol", "simclr", "byol+simclr", "byol-no-stopgrad"])
def test_small_crops_reach_only_the_online_network_all_in_one_pass(method):
    model = learner(method, small_crops=3)
    seen = {}

    def count(name):
        return lambda module, args, out: seen.setdefault(name, []).append(tuple(args[0].shape))
    model.online.register_forward_hook(count("online"))
    if getattr(model, "target", None) is not None:
        model.target.register_forward_hook(count("target"))
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    model(images).backward()
    assert seen["online"] == [(6, 3, 16, 16), (6, 3, 16, 16), (18, 3, 8, 8)]  # the 3 small crops of 6 images, 8 px
    assert seen.get("target", [(6, 3, 16, 16)] * 2) == [(6, 3, 16, 16)] * 2  # the target sees the large views only


def test_small_crops_change_the_loss_exactly_as_byol_loss_says():
    model = learner("byol", small_crops=2)
    small = torch.randn(12, 3, 8, 8)
    with torch.no_grad():
        p_small = model.predictor(model.online(small)).unflatten(0, (2, 6))
        p_1, p_2 = model.predictor(model.online(V1)), model.predictor(model.online(V2))
        expected = byol_loss(p_1, p_2, model.target(V1), model.target(V2), p_small)
        torch.testing.assert_close(model.loss(V1, V2, small), expected)
