"""LaSS mask analysis: IoU and language-specific fractions of three hand-made masks, checked
against values worked out by hand; the report, the two figures and the errors."""
import json

import pytest
import torch

from ptnmt_fairseq.lass.analyze import layer_of, layer_order, main, module_of
from ptnmt_fairseq.lass.masks import DirectionMask, mask_path

FC1 = "encoder.layers.0.fc1.weight"
CROSS = "decoder.layers.0.encoder_attn.k_proj.weight"
OUT = "decoder.output_projection.weight"
# Each 2x2 mask written flat (row-major, positions 0..3); 1 = kept.
FLAT = {"de-en": {FC1: [1, 1, 0, 0], CROSS: [1, 1, 1, 0], OUT: [1, 0, 0, 0]},
        "en-de": {FC1: [1, 1, 0, 0], CROSS: [0, 1, 1, 1], OUT: [0, 1, 0, 0]},
        "en-fr": {FC1: [1, 0, 1, 0], CROSS: [1, 1, 1, 1], OUT: [1, 0, 1, 0]}}


def save_masks(mask_dir, directions=FLAT):
    for direction, flat in directions.items():
        # Names in sorted order, as find_masks writes them (decoder first): the report must
        # still list layers bottom to top.
        masks = {name: torch.tensor(flat[name], dtype=torch.bool).view(2, 2)
                 for name in sorted(flat)}
        DirectionMask(direction, masks, 0.5).save(mask_path(mask_dir, direction))


def test_report_matches_hand_computed_values(tmp_path, capsys):
    save_masks(tmp_path / "masks")
    main([str(tmp_path / "masks"), "--out", str(tmp_path / "out")])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    report = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert printed == report
    assert report["directions"] == ["de-en", "en-de", "en-fr"]
    assert report["alpha"] == {"de-en": 0.5, "en-de": 0.5, "en-fr": 0.5}
    # |a and b| / |a or b| summed over FC1, CROSS, OUT:
    # de-en/en-de: (2 + 2 + 0) / (2 + 4 + 2) = 4/8
    # de-en/en-fr: (1 + 3 + 1) / (3 + 4 + 2) = 5/9
    # en-de/en-fr: (1 + 3 + 0) / (3 + 4 + 3) = 4/10
    expected_iou = [[1.0, 0.5, 5 / 9], [0.5, 1.0, 0.4], [5 / 9, 0.4, 1.0]]
    for row, expected in zip(report["iou"], expected_iou):
        assert row == pytest.approx(expected, abs=1e-6)
    # Directions keeping each position: FC1 [3, 2, 1, 0] -> kept by any 3, by all 1 -> 2/3;
    # CROSS [2, 3, 3, 2] -> any 4, all 2 -> 2/4; OUT [2, 1, 1, 0] -> any 3, all 0 -> 3/3.
    assert list(report["specific_by_layer"]) == ["encoder 0", "decoder 0", "output projection"]
    assert list(report["specific_by_layer"].values()) == pytest.approx([2 / 3, 0.5, 1.0],
                                                                       abs=1e-6)
    assert report["specific_by_module"] == pytest.approx(
        {"encoder feed-forward": 2 / 3, "decoder cross-attention": 0.5,
         "output projection": 1.0}, abs=1e-6)
    for figure in ("iou.png", "specific.png"):
        assert (tmp_path / "out" / figure).stat().st_size > 0


def test_selected_directions(tmp_path, capsys):
    save_masks(tmp_path / "masks")
    main([str(tmp_path / "masks"), "--out", str(tmp_path / "out"), "--directions", "en-fr,de-en"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["directions"] == ["en-fr", "de-en"]
    assert report["iou"][0][1] == pytest.approx(5 / 9, abs=1e-6)
    # Two directions: FC1 [2, 1, 1, 0] -> 2/3; CROSS [2, 2, 2, 1] -> 1/4; OUT [2, 0, 1, 0] -> 1/2.
    assert list(report["specific_by_layer"].values()) == pytest.approx([2 / 3, 0.25, 0.5],
                                                                       abs=1e-6)


def test_errors_name_the_directory_file_and_directions(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="empty.*holds no LaSS mask"):
        main([str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    save_masks(tmp_path / "masks")
    with pytest.raises(SystemExit, match="no LaSS mask for fr-en: .*fr-en.mask.npz"):
        main([str(tmp_path / "masks"), "--out", str(tmp_path / "out"),
              "--directions", "de-en,fr-en"])
    save_masks(tmp_path / "masks", {"fr-en": {FC1: [1, 1, 1, 1], OUT: [1, 1, 1, 1]}})
    with pytest.raises(SystemExit, match="de-en and fr-en cover different tensors"):
        main([str(tmp_path / "masks"), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_groups_in_network_order():
    names = ["decoder.output_projection.weight", "decoder.layers.10.fc2.weight",
             "encoder.layers.10.self_attn.out_proj.weight",
             "decoder.layers.2.self_attn.q_proj.weight", "encoder.layers.2.fc1.weight"]
    assert sorted({layer_of(n) for n in names}, key=layer_order) == [
        "encoder 2", "encoder 10", "decoder 2", "decoder 10", "output projection"]
    assert [module_of(n) for n in names] == [
        "output projection", "decoder feed-forward", "encoder self-attention",
        "decoder self-attention", "encoder feed-forward"]
