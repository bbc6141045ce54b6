"""`pystream finetune` on a tiny set: the loss goes down, bad rows are reported one by one and
skipped, a killed run resumes to the same adapter, and the adapter is what model: names."""

import csv
import json

import numpy as np
import pytest
import torch

peft = pytest.importorskip("peft")

from pystream import finetune  # noqa: E402
from pystream.model.tempme import ClipVideoModel, text_features  # noqa: E402

SIZE = 112  # the shipped model's input size


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """8 synthetic clips (12 s at 1 fps, H.264) and a CSV naming them, plus three bad rows."""
    from pystream.synthetic import videos as synth

    d = tmp_path_factory.mktemp("ft")
    rows = []
    for i, ex in enumerate(synth.make_split("train", 8, seed=5)):
        synth.write_video(synth.render_example(ex, SIZE, 12), d / f"v{i}.mp4", fps=1.0)
        rows.append({"video": f"v{i}.mp4", "caption": ex.caption, "start": "", "end": ""})
    (d / "broken.mp4").write_bytes(b"this is not a video")
    bad = [{"video": "missing.mp4", "caption": "a red ball appears", "start": "", "end": ""},
           {"video": "v0.mp4", "caption": "  ", "start": "", "end": ""},
           {"video": "broken.mp4", "caption": "a blue box moves up", "start": "", "end": ""}]
    with open(d / "pairs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["video", "caption", "start", "end"])
        w.writeheader()
        w.writerows(rows[:3] + bad + rows[3:])  # bad rows on CSV lines 5, 6, 7
    return d


def _args(data, out, *extra):
    p = finetune.argparse.ArgumentParser()
    finetune.add_arguments(p)
    argv = ["--data", str(data), "--model", "shipped-base", "--out", str(out), "--batch", "4",
            "--epochs", "3", "--lr", "3e-3", "--warmup", "1", "--val-fraction", "0.25",
            "--workers", "1", "--quiet", "--save-every", "1", *extra]
    args = p.parse_args(argv)
    args.argv = argv
    return args


def _batch_loss(model, data):
    """InfoNCE of the model on all good clips (no reversed negatives), fp32."""
    rows, _ = finetune.read_rows(data)
    ds = finetune.load_dataset(rows, SIZE, progress=False)
    ok = [i for i, r in enumerate(ds.rows)]
    with torch.no_grad():
        v = torch.nn.functional.normalize(model.encode_video(ds.frames[ok]), dim=-1)
        enc = model.tokenizer([ds.rows[i].captions[0] for i in ok], padding=True,
                              return_tensors="pt")
        t = torch.nn.functional.normalize(
            text_features(model.clip, enc["input_ids"], enc["attention_mask"]), dim=-1)
    scale = float(model.clip.logit_scale.detach().exp().clamp(max=100))
    return float(finetune.info_nce(t, v, scale))


def test_bad_rows_are_reported_and_skipped_and_loss_goes_down(tiny_set, tmp_path, capsys):
    out = tmp_path / "ad"
    summary = finetune.run(_args(tiny_set / "pairs.csv", out))
    err = capsys.readouterr().err
    assert "row 5 (" in err and "missing.mp4): video file not found; skipped" in err
    assert "row 6 (" in err and "empty caption; skipped" in err
    assert "row 7 (" in err and "broken.mp4): unreadable video" in err
    assert len(summary["skipped"]) == 3
    assert summary["train_clips"] + summary["val_clips"] == 8
    assert all("val_r1" in h for h in summary["history"]) and len(summary["history"]) == 3
    before = _batch_loss(ClipVideoModel.from_pretrained("shipped-base"), tiny_set / "pairs.csv")
    after = _batch_loss(ClipVideoModel.from_pretrained(str(out)), tiny_set / "pairs.csv")
    assert after < before - 0.01, (before, after)
    # finetune.json records the command; a second identical run has nothing to do.
    assert json.loads((out / "finetune.json").read_text())["complete"]
    assert not (out / finetune.STATE).exists()
    again = finetune.run(_args(tiny_set / "pairs.csv", out))
    assert again["history"] == summary["history"]


def test_killed_run_resumes_to_the_same_adapter(tiny_set, tmp_path):
    from safetensors.torch import load_file

    full = tmp_path / "full"
    finetune.run(_args(tiny_set / "pairs.csv", full, "--epochs", "2", "--batch", "2"))
    part = tmp_path / "part"
    r = finetune.run(_args(tiny_set / "pairs.csv", part, "--epochs", "2", "--batch", "2",
                           "--stop-after", "2"))
    assert not r["complete"] and (part / finetune.STATE).exists()
    finetune.run(_args(tiny_set / "pairs.csv", part, "--epochs", "2", "--batch", "2"))
    for name in ("adapter_model.safetensors", "temporal.safetensors"):
        a, b = load_file(str(full / name)), load_file(str(part / name))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_data_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        finetune.read_rows(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError, match="no captions.csv"):
        finetune.read_rows(tmp_path)
    (tmp_path / "x.csv").write_text("file,text\na.mp4,hello\n")
    with pytest.raises(ValueError, match="'video'"):
        finetune.read_rows(tmp_path / "x.csv")
    (tmp_path / "y.csv").write_text("video,caption,start,end\na.mp4,hi,5,2\nb.mp4,hi,x,\n")
    rows, problems = finetune.read_rows(tmp_path / "y.csv")
    assert rows == [] and [p.line for p in problems] == [2, 3]
    assert "end 2.0 <= start 5.0" in str(problems[0]) and "bad start/end" in str(problems[1])


def test_sample_clip_spans(tiny_set):
    full = finetune.sample_clip(str(tiny_set / "v0.mp4"), SIZE)
    assert full.shape == (12, SIZE, SIZE, 3)
    part = finetune.sample_clip(str(tiny_set / "v0.mp4"), SIZE, start=4.0, end=8.0)
    assert np.array_equal(part[0], full[4]) and np.array_equal(part[-1], full[7])


def test_cli_finetune_reports_missing_data(tmp_path, capsys):
    from pystream.cli import main

    rc = main(["finetune", "--data", str(tmp_path / "none.csv"), "--model", "shipped-base",
               "--out", str(tmp_path / "o")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
