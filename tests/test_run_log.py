from asr.run_log import RunLog


def test_steps_tsv_has_every_step_once_after_a_resume(tmp_path):
    with RunLog(tmp_path, 0, log_every=2, enabled=True) as log:
        for step in range(1, 6):
            log.step(step, 1.0 / step, 0.001, 0.5)
    with RunLog(tmp_path, 3, log_every=2, enabled=True) as log:  # resumed from the checkpoint of step 3
        for step in range(4, 7):
            log.step(step, 1.0 / step, 0.001, 0.5)
    lines = (tmp_path / "steps.tsv").read_text().splitlines()
    assert lines[0] == "step\tloss\tlr" and [line.split("\t")[0] for line in lines[1:]] == ["1", "2", "3", "4", "5", "6"]
    assert lines[4] == f"4\t{1.0 / 4!r}\t0.001"
    assert any((tmp_path / "tensorboard").iterdir())


def test_off_rank_0_nothing_is_written(tmp_path):
    with RunLog(tmp_path, 0, log_every=1, enabled=False) as log:
        log.waited(0.5)
        log.step(1, 1.0, 0.001, 0.5)
        log.flush()
    assert list(tmp_path.iterdir()) == []
