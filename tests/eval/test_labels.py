"""The labelled subset: class-balanced, reproducible, read back from its list, refused in one line."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byol.core.errors import ByolError
from byol.data.folders import ImageFiles
from byol.eval.labels import choose_labelled, labels_text, listed_images, parse_label_spec


def listing_of(sizes: list[int], root: Path = Path("/data")) -> ImageFiles:
    """A listing with sizes[c] files in class c, the classes interleaved as a walk never gives them."""
    files, labels = [], []
    for c, size in enumerate(sizes):
        files += [root / f"class{c}" / f"{i:04d}.jpg" for i in range(size)]
        labels += [c] * size
    return ImageFiles(root, files, labels, [f"class{c}" for c in range(len(sizes))])


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(1, 60), min_size=2, max_size=6), percent=st.floats(0.5, 100), seed=st.integers(0, 99))
def test_a_share_takes_that_share_of_every_class_rounded_and_at_least_one(sizes, percent, seed):
    listing = listing_of(sizes)
    chosen = choose_labelled(listing, parse_label_spec(f"{percent}%"), seed)
    assert chosen == sorted(set(chosen))
    taken = [sum(listing.labels[i] == c for i in chosen) for c in range(len(sizes))]
    assert taken == [max(1, round(percent / 100 * n)) for n in sizes]


def test_images_a_class_are_exact_reproducible_from_the_seed_and_differ_between_seeds():
    listing = listing_of([30, 50, 40])
    first = choose_labelled(listing, 7, seed=3)
    assert [sum(listing.labels[i] == c for i in first) for c in range(3)] == [7, 7, 7]
    assert choose_labelled(listing, 7, seed=3) == first
    assert choose_labelled(listing, 7, seed=4) != first
    assert choose_labelled(listing, None, seed=3) == list(range(120))


def test_a_list_file_reads_back_the_same_images_by_path_or_by_unique_name(tmp_path):
    listing = listing_of([20, 20], root=tmp_path)
    chosen = choose_labelled(listing, 0.25, seed=1)
    (tmp_path / "labels.txt").write_text(labels_text(listing, chosen))
    assert listed_images(listing, tmp_path / "labels.txt") == chosen
    unique = ImageFiles(tmp_path, [tmp_path / "a" / "x1.jpg", tmp_path / "b" / "x2.jpg"], [0, 1], ["a", "b"])
    (tmp_path / "names.txt").write_text("# the published lists give bare names\nx2.jpg\n\nx1.jpg\n")
    assert listed_images(unique, tmp_path / "names.txt") == [0, 1]


@pytest.mark.parametrize("lines, says", [
    ("class0/0000.jpg\nclass9/0001.jpg\n", "1 listed images are not found"),
    ("0000.jpg\n", "not unique by name"),  # 0000.jpg is in both classes
    ("\n# nothing\n", "no listed images"),
])
def test_a_list_naming_what_is_not_there_is_one_line(tmp_path, lines, says):
    (tmp_path / "list.txt").write_text(lines)
    with pytest.raises(ByolError, match=says):
        choose_labelled(listing_of([5, 5], root=tmp_path), parse_label_spec(str(tmp_path / "list.txt")), 0)


@pytest.mark.parametrize("text, says", [
    ("0%", "above 0%"), ("100.5%", "at most 100%"), ("ten%", "above 0%"), ("-3%", "above 0%"),
    ("0", "1 or more images a class"), ("/no/such/list.txt", "nor an existing list file"),
])
def test_a_bad_share_count_or_list_is_refused_in_one_line(text, says):
    with pytest.raises(ByolError, match=says) as refusal:
        parse_label_spec(text)
    assert "\n" not in str(refusal.value)


def test_more_images_a_class_than_a_class_has_names_the_class_and_the_most_possible():
    with pytest.raises(ByolError, match=r"class 'class1' has only 4 images; ask for at most 4"):
        choose_labelled(listing_of([9, 4, 12]), 5, seed=0)


@pytest.mark.parametrize("text", ["²", "¹⁰", "½"])
def test_labels_in_digits_that_int_refuses_are_one_line(text):
    with pytest.raises(ByolError, match=f"--labels {text}: not a share"):
        parse_label_spec(text)
