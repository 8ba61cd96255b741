"""The callbacks' drawing helpers: RGB for display, never-overwritten picture names, images to the loggers, the
full-image panel (the labelled grid: test_callbacks_image_grid.py)."""

from types import SimpleNamespace

import torch

from cutlight.lightning.callbacks.drawing import full_image_panel, log_image, to_rgb, unused_path


def test_to_rgb_repeats_gray_and_drops_alpha():
    gray, rgba = torch.rand(2, 1, 4, 4), torch.rand(2, 4, 4, 4)
    assert torch.equal(to_rgb(gray), gray.expand(-1, 3, -1, -1)) and torch.equal(to_rgb(rgba), rgba[:, :3])


def test_unused_path_never_overwrites(tmp_path):
    path = tmp_path / "step_000005.png"
    assert unused_path(path) == path
    path.write_bytes(b"x")
    (tmp_path / "step_000005-resumed1.png").write_bytes(b"x")
    assert unused_path(path) == tmp_path / "step_000005-resumed2.png"


def test_log_image_goes_to_loggers_that_take_images():
    calls = []
    wandb_like = SimpleNamespace(log_image=lambda **kw: calls.append(("wandb", kw["key"], kw["images"][0].shape)))
    tensorboard_like = SimpleNamespace(experiment=SimpleNamespace(
        add_image=lambda key, image, global_step: calls.append(("tb", key, tuple(image.shape), global_step))))
    csv_like = SimpleNamespace(experiment=SimpleNamespace())
    image = torch.zeros(3, 5, 7, dtype=torch.uint8)
    log_image(SimpleNamespace(loggers=[wandb_like, tensorboard_like, csv_like]), "samples/x", image, step=3)
    assert calls == [("wandb", "samples/x", (5, 7, 3)), ("tb", "samples/x", (3, 5, 7), 3)]


def test_full_image_panel_layout():
    source, translation = torch.full((1, 3, 6, 10), -1.0), torch.full((1, 3, 6, 10), 1.0)
    target = torch.zeros(1, 1, 12, 8)  # grayscale, twice the height: scaled to 6 x 4
    panel = full_image_panel(source, translation, target, gap=2)
    assert panel.shape == (3, 6, 10 + 2 + 10 + 2 + 4) and panel.dtype == torch.uint8
    assert (panel[:, :, :10] == 0).all() and (panel[:, :, 10:12] == 255).all() and (panel[:, :, 12:22] == 255).all()
