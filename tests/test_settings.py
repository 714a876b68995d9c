import warnings

import numpy
import pytest
import torch

from spacy_contproto.self_training import SelfTrainingState
from spacy_contproto.settings import ContProtoSettings

CLASSES = ["O", "PER", "LOC"]


def test_settings_reject_unknown_choices_and_ranges():
    with pytest.raises(ValueError, match="first_margin must be one of"):
        ContProtoSettings(first_margin="last")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        ContProtoSettings(temperature=0.0)
    # alpha 0 would make the sequential EMA take log(0): prototypes and margins become NaN
    # and alpha 1 would keep the prototypes at their zero start: every label pulled to "O"
    for alpha in (0.0, 1.0):
        with pytest.raises(ValueError, match=r"prototype_alpha must be in \(0, 1\)"):
            ContProtoSettings(prototype_alpha=alpha)
    ContProtoSettings(prototype_alpha=0.999)


def test_settings_reject_paths_of_the_wrong_kind(tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValueError, match="store_dir must be a folder"):
        ContProtoSettings(store_dir=str(tmp_path / "a-file"))
    with pytest.raises(ValueError, match="quality_log must be a file path"):
        ContProtoSettings(quality_log=str(tmp_path))
    ContProtoSettings(store_dir=str(tmp_path / "new"), quality_log=str(tmp_path / "new" / "quality.jsonl"))


def test_fixed_margin_no_cosine_can_pass_warns():
    with pytest.warns(UserWarning, match="never exceeds 1"):
        ContProtoSettings(margin="fixed", fixed_margin=1.0).warn_about_training()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ContProtoSettings(margin="fixed", fixed_margin=1.0)  # loading a model: no training ahead
        ContProtoSettings(margin="fixed", fixed_margin=0.8).warn_about_training()
        ContProtoSettings(margin="class", fixed_margin=1.0).warn_about_training()  # fixed_margin unused
        ContProtoSettings(margin="fixed", prototypes=False).warn_about_training()


def test_prototypes_on_an_untrained_projection_warn():
    with pytest.warns(UserWarning, match="only the contrastive loss trains"):
        ContProtoSettings(contrastive_loss=False).warn_about_training()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ContProtoSettings(contrastive_loss=False)
        ContProtoSettings(contrastive_loss=False, prototype_space="representation").warn_about_training()
        ContProtoSettings(contrastive_loss=False, prototypes=False).warn_about_training()  # vanilla


@pytest.mark.parametrize("warmup_epochs,consequence", [(1, "never refined"), (0, "margins are never computed")])
def test_refining_without_the_epoch_warns_once(warmup_epochs, consequence):
    state = SelfTrainingState(ContProtoSettings(warmup_epochs=warmup_epochs), CLASSES, prototype_width=2)
    with pytest.warns(UserWarning, match=consequence):
        assert state.refining is (warmup_epochs == 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert state.refining is (warmup_epochs == 0)
        state.set_training_state(epoch=0, step=0)
        assert state.refining is (warmup_epochs == 0)


def margins_by_epoch(first_margin: str, warmup_epochs: int = 1, epochs: int = 4):
    """The margins each epoch refines with, when every epoch sees the same spans."""
    state = SelfTrainingState(
        ContProtoSettings(first_margin=first_margin, warmup_epochs=warmup_epochs), CLASSES, prototype_width=2
    )
    similarities = torch.tensor([[0.9, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.3, 0.5]])
    labels = torch.tensor([0, 1, 2])
    used = []
    for epoch in range(epochs):
        state.set_training_state(epoch=epoch, step=epoch)
        used.append(state.margins().tolist() if state.refining else None)
        state.memory.add_margin_statistics(similarities, labels)
    return used


def test_first_refinement_margins_from_warmup_or_zero():
    from_warmup = [0.9, 0.6, 0.5]
    assert margins_by_epoch("previous_epoch") == [None, pytest.approx(from_warmup), pytest.approx(from_warmup),
                                                  pytest.approx(from_warmup)]
    # the published code refines its first epoch with margin 0, later ones from the previous epoch
    assert margins_by_epoch("zero") == [None, [0.0, 0.0, 0.0], pytest.approx(from_warmup), pytest.approx(from_warmup)]
    assert margins_by_epoch("zero", warmup_epochs=2) == [None, None, [0.0, 0.0, 0.0], pytest.approx(from_warmup)]


def test_an_epoch_number_skipped_keeps_the_margins_of_the_epoch_that_ran():
    state = SelfTrainingState(ContProtoSettings(warmup_epochs=1), CLASSES, prototype_width=2)
    state.set_training_state(epoch=0, step=0)
    state.memory.add_margin_statistics(torch.tensor([[0.9, 0.2, 0.1], [0.1, 0.6, 0.3]]), torch.tensor([0, 1]))
    state.set_training_state(epoch=2, step=1)  # a hand-written loop that jumped from epoch 0 to 2
    assert state.margins().tolist() == pytest.approx([0.9, 0.6, 0.0])


@pytest.mark.parametrize("name", ["warmup_epochs", "store_max_ram_mb"])
def test_negative_counts_are_refused(name):
    with pytest.raises(ValueError, match=f"{name} must be >= 0"):
        ContProtoSettings(**{name: -1})


def test_a_linear_beta_without_epochs_to_run_over_warns():
    with pytest.warns(UserWarning, match="beta stays at 0.95"):
        ContProtoSettings(beta_schedule="linear", max_epochs=0).warn_about_training()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ContProtoSettings(beta_schedule="linear", max_epochs=4).warn_about_training()
        ContProtoSettings(beta_schedule="constant", max_epochs=0).warn_about_training()


def test_pseudo_labels_refuse_spans_other_than_those_labelled_even_as_many():
    from spacy_contproto.spans import enumerate_spans

    two_four = enumerate_spans(numpy.asarray([0, 0, 1, 1, 1, 1]), 4)  # sentences of 2 and 4 tokens
    four_two = enumerate_spans(numpy.asarray([0, 0, 0, 0, 1, 1]), 4)
    assert len(two_four) == len(four_two) == 13
    state = SelfTrainingState(ContProtoSettings(), CLASSES, prototype_width=2)
    rows = numpy.full((13, len(CLASSES)), 1 / len(CLASSES), dtype=numpy.float32)
    state.build_store({"doc": rows}, {}, {"doc": two_four})
    assert state.pseudo_labels(["doc"], [two_four.copy()]).shape == (13, len(CLASSES))
    with pytest.raises(ValueError, match=r"the spans of target Doc 'doc' in this batch \(13\) are not the spans its 13"):
        state.pseudo_labels(["doc"], [four_two])
