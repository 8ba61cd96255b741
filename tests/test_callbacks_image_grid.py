"""The image-grid callback: labelled columns, the same fixed images at every step, a progress picture."""

import numpy as np
import torch
from PIL import Image

from cutlight.lightning.callbacks import ImageGrid
from cutlight.lightning.callbacks.drawing import labelled_grid
from helpers import tiny_data, tiny_module, tiny_trainer


def test_labelled_grid_layout():
    a = torch.full((2, 3, 8, 8), -1.0)  # black tiles
    b = torch.full((2, 3, 8, 8), 1.0)  # white tiles
    grid = labelled_grid([a, b, a], ["input", "translation", "target"], scale=3, caption="step 5", padding=4)
    assert grid.dtype == torch.uint8 and grid.shape[0] == 3
    width = 4 + 3 * (24 + 4)  # padding, then 3 columns of 8 px tiles x 3 and their padding
    assert grid.shape[2] == width
    header = grid.shape[1] - (4 + 2 * (24 + 4))
    assert header > 10  # two text lines above the tiles
    assert (grid[:, :header] < 128).any()  # the titles are drawn (dark text on white)
    top, left = header + 4, 4  # first tile of the first column: black, upscaled to 24 x 24
    assert (grid[:, top:top + 24, left:left + 24] == 0).all()
    assert (grid[:, top:top + 24, left + 28:left + 52] == 255).all()  # second column: white tile


def test_image_grid_writes_fixed_images_each_step_and_progress(tmp_path):
    torch.manual_seed(0)
    grid = ImageGrid(every_n_steps=2, num_images=2, tile_size=64)
    trainer = tiny_trainer(tmp_path, max_steps=8, limit_val_batches=0, callbacks=[grid])  # 4 batches
    trainer.fit(tiny_module(), datamodule=tiny_data(tmp_path))
    images = tmp_path / "images"
    assert sorted(p.name for p in images.glob("step_*.png")) == ["step_000000.png", "step_000002.png",
                                                                 "step_000004.png"]
    assert grid.last_path == images / "step_000004.png" and grid.progress_path == images / "progress.png"
    assert [step for step, _ in grid.history] == [0, 2, 4]
    first, last = (np.asarray(Image.open(images / f"step_00000{s}.png")) for s in (0, 4))
    assert first.shape == last.shape and first.shape[1] == 4 + 3 * (64 + 4)  # 32 px tiles shown at 64 px
    # the input and target columns are the same fixed validation images at every step; the translation changed
    header = first.shape[0] - (4 + 2 * (64 + 4))
    column = lambda img, k: img[header:, 4 + k * 68: 68 + k * 68]  # noqa: E731
    assert np.array_equal(column(first, 0), column(last, 0)) and np.array_equal(column(first, 2), column(last, 2))
    assert not np.array_equal(column(first, 1), column(last, 1))
    progress = np.asarray(Image.open(grid.progress_path))
    assert progress.shape[1] == 4 + 5 * (32 + 4)  # input, steps 0, 2, 4, target at half the tile scale


def test_image_grid_called_directly_writes_each_step_once_and_summarises(tmp_path):
    from types import SimpleNamespace

    from fake_trainer import FakeModule, fake_trainer

    torch.manual_seed(0)
    images = [{"image": torch.rand(3, 8, 8) * 2 - 1} for _ in range(3)]
    grid, module = ImageGrid(every_n_steps=2, num_images=2, tile_size=16, dirpath=str(tmp_path)), FakeModule()
    trainer = fake_trainer(SimpleNamespace(val_dataset_a=images, val_dataset_b=images[::-1]), batches=0)
    assert grid.summary() == {}
    grid.on_train_start(trainer, module)
    for step in (1, 2, 3, 4):
        trainer.fit_loop.total_batch_idx = step - 1
        grid.on_train_batch_end(trainer, module, None, None, step - 1)
    grid.on_train_end(trainer, module)  # step 4 again: already written, only the progress picture is new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["progress.png", "step_000000.png", "step_000002.png",
                                                          "step_000004.png"]
    assert grid.columns == ["input A", "translation G(A)", "target domain B"] and module.training
    assert grid.summary() == {
        "image grids": str(tmp_path),
        "progress (the translation at every grid step)": str(tmp_path / "progress.png"),
        "final image grid (input A | translation G(A) | target domain B)": str(tmp_path / "step_000004.png"),
    }


def test_image_grid_labels_the_users_domains_with_direction_b_to_a(tmp_path):
    """Issue 27.6: with data.direction=BtoA the grids said ``input A | translation G(A) | target domain B`` while
    the input column showed B images."""
    from types import SimpleNamespace

    from cutlight.lightning.callbacks.image_grid import oriented_labels
    from fake_trainer import FakeModule, fake_trainer

    images = [{"image": torch.rand(3, 8, 8) * 2 - 1} for _ in range(2)]
    grid = ImageGrid(every_n_steps=2, num_images=2, tile_size=16, dirpath=str(tmp_path))
    data = SimpleNamespace(val_dataset_a=images, val_dataset_b=images, direction="BtoA")
    trainer = fake_trainer(data, batches=0)
    grid.on_train_start(trainer, FakeModule())
    assert grid.columns == ["input B", "translation G(B)", "target domain A"]
    assert "final image grid (input B | translation G(B) | target domain A)" in grid.summary()
    # CycleGAN's columns: the generators keep their names, the images say which domain they are
    assert oriented_labels(["A", "G_A(A)", "G_B(G_A(A))", "B", "G_B(B)"], "BtoA") == [
        "B", "G_A(B)", "G_B(G_A(B))", "A", "G_B(A)"]
    assert oriented_labels(["input A", "translation G(A)"], "AtoB") == ["input A", "translation G(A)"]
