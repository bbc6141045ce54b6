"""Our forward against transformers' own, on random weights of the real CLIP shapes."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pystream import synth
from pystream.model.tempme import ClipVideoModel, image_features, text_features
from model_fixtures import clip_model, video_model


def _perframe_reference(clip, pixels):
    V, Fn = pixels.shape[:2]
    feats = image_features(clip, pixels.flatten(0, 1)).view(V, Fn, -1)
    return F.normalize(feats.mean(1), dim=-1)


@pytest.mark.parametrize("name,frames", [("tiny", 12), ("tiny", 5), ("b32", 4),
                                         pytest.param("b16", 2, marks=pytest.mark.slow)])
def test_merging_off_equals_transformers(name, frames):
    m = video_model(name, schedule="off")
    s = m.image_size
    torch.manual_seed(1)
    px = torch.randn(2, frames, 3, s, s)
    with torch.no_grad():
        ours = m.encode_video(px)
        ref = _perframe_reference(m.clip, px)
    assert (ours - ref).abs().max().item() < 1e-4


@pytest.mark.parametrize("name", ["tiny", "b32"])
def test_text_features_equal_transformers(name):
    m = video_model(name)
    torch.manual_seed(2)
    vocab = m.clip.config.text_config.vocab_size
    ids = torch.randint(3, vocab - 3, (3, 9))
    ids[:, -1] = vocab - 1  # CLIP pools at the highest id (the EOS token)
    with torch.no_grad():
        ref = F.normalize(text_features(m.clip, ids), dim=-1)
        ours = F.normalize(m.clip.get_text_features(input_ids=ids).pooler_output, dim=-1)
    assert (ours - ref).abs().max().item() < 1e-5


def test_tempme_output_tokens_match_accounting():
    m = video_model("b32")
    torch.manual_seed(3)
    px = torch.randn(1, 12, 3, 224, 224)
    with torch.no_grad():
        t = m.embed(px[0])
        t = m.run_layers(t, 0, 12, m.schedule)
    acc = m.accounting()
    assert t.num_seq * t.num_tokens == acc.output_tokens == 97
    assert t.n_cls == 12
    assert torch.allclose(t.sizes.sum(), torch.tensor(600.0))


def test_tempme_embedding_is_normalised():
    m = video_model("tiny")
    torch.manual_seed(4)
    px = torch.randn(3, 12, 3, 64, 64)
    with torch.no_grad():
        a = m.encode_video(px)
    assert torch.allclose(a.norm(dim=-1), torch.ones(3), atol=1e-5)


MARGIN = 0.03  # measured: the smallest margin is 0.096 (default) and 0.139 (fast)


@pytest.mark.parametrize("schedule", ["default", "fast"])
def test_tempme_embedding_matches_its_own_video_not_others(schedule):
    """Merging approximates, it does not scramble: with the shipped trained model on 16
    synthetic videos, each video's TempMe embedding is closer to the per-frame embedding of
    the same video than to any other video's, by a margin. (A random-weight model cannot show
    this: its embeddings of any two videos, even an all-zero one, have cosine ~0.998.)
    The training-free checkpoint (shipped-base): the shipped adapter's temporal embeddings
    are meant to make TempMe differ from a per-frame mean."""
    m = ClipVideoModel.from_pretrained("shipped-base")
    exs = synth.make_split("test", 16, 7)
    frames = torch.from_numpy(np.stack([synth.render_example(e, m.image_size, 12) for e in exs]))
    with torch.no_grad():
        a = m.encode_video(frames, schedule=schedule)
        b = m.encode_video(frames, schedule="off")
    sim = a @ b.T
    others = sim.clone().fill_diagonal_(float("-inf")).max(dim=1).values
    margin = sim.diag() - others
    assert (margin > MARGIN).all(), f"margins {margin.tolist()}"
    # An empty (all-black) video is no match for any of them either.
    with torch.no_grad():
        z = m.encode_video(torch.zeros_like(frames[:1]), schedule="off")
    assert ((a @ z.T).squeeze(1) < sim.diag() - MARGIN).all()


def test_gradients_flow_through_merging():
    m = video_model("tiny")
    px = torch.randn(1, 12, 3, 64, 64)
    m.train()
    try:
        loss = m.encode_video(px).sum()
        loss.backward()
    finally:
        m.eval()
    g = m.layers[0].self_attn.q_proj.weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    m.zero_grad(set_to_none=True)


def test_bad_inputs():
    m = video_model("tiny")
    with pytest.raises(ValueError, match="expects 64x64"):
        m.preprocess(torch.zeros(12, 32, 32, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="12 frames"):
        m.encode_video(torch.randn(1, 8, 3, 64, 64))
    px = torch.randn(1, 12, 3, 64, 64)
    px[0, 3, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        m.encode_video(px)
    with pytest.raises(ValueError, match="uint8"):
        m.preprocess(torch.zeros(64, 64, 3, dtype=torch.float64))


def test_embed_moves_pixels_to_the_model_device():
    """Pixels given on the CPU go to the model's device ("meta" stands in for a GPU here)."""
    m = copy.deepcopy(video_model("tiny")).to("meta")
    t = m.embed(torch.randn(12, 3, 64, 64), frame_index=list(range(12)),
                frame_times=[(i, i + 1.0) for i in range(12)])
    assert t.h.device.type == t.sizes.device.type == t.frames.device.type == "meta"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device and a CUDA torch")
@pytest.mark.parametrize("schedule", ["off", "default"])
def test_encode_video_on_cuda_equals_cpu(schedule, no_tf32):
    m = video_model("b32", schedule=schedule)
    frames = torch.randint(0, 256, (2, 12, 224, 224, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = m.encode_video(frames)
        gpu = copy.deepcopy(m).cuda()
        got = gpu.encode_video(frames)  # uint8 frames on the CPU, as the decoder gives them
    assert got.is_cuda
    assert (got.cpu() - ref).abs().max().item() < 2e-3


@pytest.fixture
def no_tf32():
    """fp32 on the GPU as on the CPU: TF32 convolutions/matmuls would move merge decisions."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
