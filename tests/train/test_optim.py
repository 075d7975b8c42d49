import torch
from torch import nn

from byol.train.optim import LARS, build_optimizer, param_groups, set_lr


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def test_groups_exempt_biases_and_norm_parameters_from_weight_decay_and_lars():
    groups = param_groups({"online": model()}, weight_decay=0.1, lr_mult={})
    decayed = [g for g in groups if g["lars"]]
    exempt = [g for g in groups if not g["lars"]]
    assert [p.shape for p in decayed[0]["params"]] == [torch.Size([3, 4])]
    assert decayed[0]["weight_decay"] == 0.1
    assert sorted(p.numel() for p in exempt[0]["params"]) == [3, 3, 3]  # linear bias, bn weight, bn bias
    assert exempt[0]["weight_decay"] == 0.0


def test_lars_step_matches_the_reference_rule_by_hand():
    net = model()
    groups = param_groups({"online": net}, weight_decay=0.5, lr_mult={})
    opt = LARS(groups, lr=0.1, momentum=0.9, eta=1e-3)
    for p in net.parameters():
        p.grad = torch.randn_like(p)
    weight, bias = net[0].weight, net[0].bias
    w0, gw, b0, gb = weight.detach().clone(), weight.grad.clone(), bias.detach().clone(), bias.grad.clone()
    opt.step()
    update = gw + 0.5 * w0
    trust = 1e-3 * w0.norm() / update.norm()
    torch.testing.assert_close(weight.detach(), w0 - 0.1 * trust * update)
    torch.testing.assert_close(bias.detach(), b0 - 0.1 * gb)  # no decay, no trust ratio
    # second step: momentum accumulates the scaled update
    weight.grad = gw.clone()
    bias.grad = gb.clone()
    w1 = weight.detach().clone()
    opt.step()
    update1 = gw + 0.5 * w1
    velocity = 0.9 * (trust * update) + 1e-3 * w1.norm() / update1.norm() * update1
    torch.testing.assert_close(weight.detach(), w1 - 0.1 * velocity)


def test_predictor_learning_rate_multiplier_and_set_lr():
    online, predictor = model(), model()
    groups = param_groups({"online": online, "predictor": predictor}, 0.0, {"predictor": 10.0})
    opt = build_optimizer("sgd", groups, lr=0.01, momentum=0.9)
    set_lr(opt, 0.02)
    rates = {(g["name"], g["lars"]): g["lr"] for g in opt.param_groups}
    assert rates[("online", True)] == 0.02 and rates[("predictor", True)] == 0.2
    assert isinstance(build_optimizer("adamw", groups, 1e-3, 0.9), torch.optim.AdamW)


def test_lars_treats_each_tensor_of_a_group_with_its_own_trust_ratio():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        net[2].weight.mul_(30)  # norms far apart: one shared ratio would be wrong for one of them
    groups = param_groups({"online": net}, weight_decay=0.1, lr_mult={})
    opt = LARS(groups, lr=0.5, momentum=0.9, eta=0.01)
    expected = {p: p.detach().clone() for p in net.parameters()}
    velocity = {p: torch.zeros_like(p) for p in net.parameters()}
    for _ in range(3):
        for p in net.parameters():
            p.grad = torch.randn_like(p)
            update = p.grad.clone()
            if p.ndim > 1:
                update = update + 0.1 * expected[p]
                update = update * 0.01 * expected[p].norm() / update.norm()
            velocity[p] = 0.9 * velocity[p] + update
            expected[p] = expected[p] - 0.5 * velocity[p]
        opt.step()
    for p in net.parameters():
        torch.testing.assert_close(p.detach(), expected[p])


def test_sgd_with_momentum_and_adamw_follow_their_rules_by_hand_over_two_steps():
    start, grads, wd, lr = torch.tensor([[1.0, -2.0], [0.5, 3.0]]), [torch.tensor([[0.5, 1.0], [-1.0, 0.25]]),
                                                                    torch.tensor([[-0.5, 2.0], [1.0, 1.0]])], 0.1, 0.1
    sgd_p, adam_p = nn.Parameter(start.clone()), nn.Parameter(start.clone())
    sgd = build_optimizer("sgd", [dict(params=[sgd_p], weight_decay=wd)], lr, momentum=0.9)
    adamw = build_optimizer("adamw", [dict(params=[adam_p], weight_decay=wd)], lr, momentum=0.9)
    p, buf, q, m, v = start.clone(), None, start.clone(), torch.zeros(2, 2), torch.zeros(2, 2)
    for t, g in enumerate(grads, start=1):
        for param, optimizer in ((sgd_p, sgd), (adam_p, adamw)):
            param.grad = g.clone()
            optimizer.step()
        d = g + wd * p  # SGD: decay added to the gradient, heavy-ball momentum
        buf = d if buf is None else 0.9 * buf + d
        p = p - lr * buf
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g  # AdamW: decoupled decay, bias-corrected moments
        q = q * (1 - lr * wd) - lr * (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
        torch.testing.assert_close(sgd_p.detach(), p)
        torch.testing.assert_close(adam_p.detach(), q)


def test_a_first_step_that_an_fp16_grad_scaler_skips_leaves_sgd_momentum_to_start_at_the_next():
    """torch 2.14's fused SGD fills its momentum with garbage on a skipped first step (about
    1e33 here): under a grad scaler byol's SGD is the multi-tensor one."""
    param = nn.Parameter(torch.ones(1000))
    sgd = build_optimizer("sgd", [dict(params=[param], weight_decay=0.0)], lr=0.1, momentum=0.9, grad_scaler=True)
    scaler = torch.amp.GradScaler("cpu")
    for loss in (param.sum() * float("inf"), param.sum()):  # the first overflows: skipped
        sgd.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(sgd)
        scaler.update()
    torch.testing.assert_close(param.detach(), torch.full((1000,), 0.9))
