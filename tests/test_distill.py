"""distill.py: a teacher's probabilities blended into the targets, recorded in the checkpoint, mismatches refused."""
import hashlib

import pytest
import torch

from synseg import tasks
from synseg.train import distill
from synseg.train import train_cytoskeleton as train_cytoskeleton_seg
from synseg.train import train_vesicle as train_vesicle_seg
from synseg.train.runtime import Runtime
import unet
from tests.test_training import make_dataset, parse


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cpu_runtime():
    return Runtime(device=torch.device("cpu"))


def test_targets_blend_mask_and_teacher_probability(tmp_path):
    data = make_dataset(tmp_path / "data", n_train=2)
    assert train_vesicle_seg.main(parse(train_vesicle_seg, data, tmp_path / "t")) == 0
    path = tmp_path / "t" / "best_vesicle_model.pth"
    teacher = distill.Teacher.load(path, tasks.TASKS["vesicle"], cpu_runtime(), weight=0.25)
    model, _ = unet.load_model(path)
    x = torch.randn(2, 1, 32, 32)
    y = (torch.rand(2, 1, 32, 32) > 0.5).float()
    with torch.no_grad():
        expected = 0.75 * y + 0.25 * torch.sigmoid(model(x))
    got = teacher.targets(x, y)
    assert got.shape == y.shape and torch.allclose(got, expected, atol=1e-6)
    assert not any(p.requires_grad for p in teacher.model.parameters())
    assert teacher.record["teacher_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_distilled_run_records_its_teacher_and_differs_from_a_plain_one(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n_train=2)
    assert train_vesicle_seg.main(parse(train_vesicle_seg, data, tmp_path / "teacher", "--seed", "5")) == 0
    teacher = tmp_path / "teacher" / "best_vesicle_model.pth"
    assert train_vesicle_seg.main(parse(train_vesicle_seg, data, tmp_path / "plain")) == 0
    assert train_vesicle_seg.main(parse(train_vesicle_seg, data, tmp_path / "taught", "--teacher", str(teacher),
                                        "--distill-weight", "0.8")) == 0
    plain, _ = unet.load_model(tmp_path / "plain" / "last.pth")
    taught, info = unet.load_model(tmp_path / "taught" / "last.pth")
    args = info["train_args"]
    assert args["teacher"] == str(teacher) and args["distill_weight"] == 0.8 and len(args["teacher_sha256"]) == 64
    assert args["teacher_model_args"]["base_channels"] == 4
    # same seed, same data: only the targets differ, so the weights after one step do too
    key = next(k for k, v in plain.state_dict().items() if v.dtype.is_floating_point and v.dim() == 4)
    assert not torch.equal(plain.state_dict()[key], taught.state_dict()[key])


def test_teacher_of_another_task_or_missing_is_refused(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n_train=2)
    assert train_cytoskeleton_seg.main(parse(train_cytoskeleton_seg, data, tmp_path / "cyto")) == 0
    capsys.readouterr()
    other = parse(train_vesicle_seg, data, tmp_path / "v", "--teacher", str(tmp_path / "cyto" / "last.pth"))
    assert train_vesicle_seg.main(other) != 0
    assert "is a cytoskeleton model, not a vesicle model" in capsys.readouterr().err
    missing = parse(train_vesicle_seg, data, tmp_path / "w", "--teacher", str(tmp_path / "nope.pth"))
    assert train_vesicle_seg.main(missing) != 0
    err = capsys.readouterr().err
    assert "--teacher" in err and "nope.pth not found" in err
    with pytest.raises(SystemExit):
        parse(train_vesicle_seg, data, tmp_path / "x", "--teacher", str(tmp_path / "cyto" / "last.pth"),
              "--distill-weight", "1.5")
    assert "--distill-weight" in capsys.readouterr().err
