"""Two-rank gloo DDP on CPU with the helper every method's tests use (conftest.run_ddp)."""
from conftest import generate, hypotheses, num_updates, run_ddp, train_args


def test_two_rank_training_and_resume(tiny_data, tmp_path):
    outputs = run_ddp(train_args(tiny_data, tmp_path))
    assert "distributed init (rank 1)" in outputs[1]
    assert num_updates(outputs[0]) == 3

    # Resume: rank 0 reads checkpoint_last.pt and broadcasts it to rank 1 with torch.save/load
    # (_broadcast_object_slow), which needs the weights_only allow-list on rank 1 too.
    outputs = run_ddp(train_args(tiny_data, tmp_path, extra=["--max-update", "6"]))
    assert "@ 3 updates" in outputs[0] and "Loaded checkpoint" in outputs[0]
    assert num_updates(outputs[0]) == 6

    out = generate(tiny_data, tmp_path / "checkpoint_last.pt")
    assert sorted(hypotheses(out.stdout)) == list(range(10))

