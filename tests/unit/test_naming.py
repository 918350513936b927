"""Slugs are pinned: stage names, report files and record ids derive from them."""

from __future__ import annotations

import pytest

from collapselab.config.spec import Condition
from collapselab.naming import id_slug, slug


@pytest.mark.parametrize(("text", "expected"), [
    ("multi:a=0.7,b=0.3", "multi-a0.7_b0.3"),
    ("multi:a,b", "multi-a_b"),
    ("single:gpt-4o", "single-gpt-4o"),
    ("human", "human"),
    ("vanilla", "vanilla"),
])
def test_condition_slugs(text, expected):
    assert Condition.parse(text).slug == expected


def test_condition_slug_of_unequal_weights_and_odd_source_names():
    assert Condition(kind="multi", sources=("a", "b", "c"), weights=(1, 1, 2)).slug == "multi-a0.25_b0.25_c0.5"
    # a bare Condition (outside an experiment) may name anything: "/" is no special case here
    assert Condition(kind="single", sources=("hf/x y",)).slug == "single-hf_x_y"
    assert Condition(kind="single", sources=("a /b",)).slug == "single-a_b"


@pytest.mark.parametrize(("title", "expected"), [
    ("Pride and Prejudice", "pride-and-prejudice"),
    ("Sense and Sensibility", "sense-and-sensibility"),
    ("Mansfield Park", "mansfield-park"),
    ("my_file-2", "my-file-2"),
    ("  Émma!! ", "mma"),
    ("!!!", ""),
])
def test_id_slugs(title, expected):
    assert id_slug(title) == expected


def test_austen_record_ids_use_the_title_slug():
    from collapselab.corpora import austen

    assert [id_slug(t) for t in austen.BOOKS.values()] == [
        "sense-and-sensibility", "pride-and-prejudice", "mansfield-park", "emma", "northanger-abbey", "persuasion"]


@pytest.mark.parametrize(("text", "expected"), [
    ("human:test", "human-test"),
    ("t/single:a/seed1", "t--single-a--seed1"),
    ("a b  c", "a_b_c"),
    ("__x__", "x"),
    ("", ""),
])
def test_slug(text, expected):
    assert slug(text) == expected


def test_slug_options():
    assert slug("???", default="target") == "target"
    assert slug("a b", sep="-") == "a-b"
    assert slug("a.b", keep="a-z") == "a_b"
