import math

from asr.train_state import TrainState


def test_round_trip_through_plain_data():
    state = TrainState(step=12, epoch=2, batch_in_epoch=5, best=(10.5, 3.25), bad_epochs=1, skipped_steps=2,
                       epoch_loss=4.5, epoch_steps=3, epoch_frames=900, epoch_seconds=1.5, epoch_data_wait=0.1)
    data = state.to_dict()
    assert data["best"] == [10.5, 3.25]  # plain data: a checkpoint loads it with weights_only=True
    assert TrainState.from_dict(data) == state


def test_finishing_an_epoch_keeps_the_later_model_on_a_tie_and_counts_epochs_without_gain():
    state = TrainState(epoch_loss=6.0, epoch_steps=3, epoch_frames=1000, epoch_seconds=2.0, epoch_data_wait=0.5)
    result, keep = state.finish_epoch(20.0, 8.0, world_size=2)
    assert keep and state.best == (20.0, 8.0) and state.bad_epochs == 0 and state.epoch == 1
    assert (result.loss, result.frames_per_second, result.data_wait) == (2.0, 1000.0, 0.25)
    assert state.epoch_steps == state.epoch_frames == 0 and state.epoch_seconds == 0.0  # the sums start again
    _, keep = state.finish_epoch(20.0, 8.0, world_size=1)
    assert keep and state.bad_epochs == 1  # a tie: kept (trained longer), but no improvement
    _, keep = state.finish_epoch(25.0, 9.0, world_size=1)
    assert not keep and state.bad_epochs == 2 and state.best == (20.0, 8.0)
    assert TrainState().best == (math.inf, math.inf)


def test_resuming_with_another_world_keeps_the_place_in_the_epoch():
    state = TrainState(batch_in_epoch=12)  # each of 2 processes x 2 micro-batches: 6 steps, 24 shared batches
    state.move_to_world(2, 2, 1, 4)  # 1 process x 4: the same 24 batches, all its own
    assert state.batch_in_epoch == 24
    state = TrainState(batch_in_epoch=6)  # each of 2 x 1: 6 steps, 12 batches of the shared order
    state.move_to_world(2, 1, 4, 1)  # 4 x 1: 3 steps of this run, in its own micro-batches
    assert state.batch_in_epoch == 3
