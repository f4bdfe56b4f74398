"""nmt.sentences: paragraphs are cut into sentences without cutting at abbreviations."""

import pytest

from nmt.sentences import join_sentences, split_sentences

CASES = [
    ("de", ["Ein Hund rennt.", "Eine Frau liest ein Buch.", "Zwei Kinder spielen im Park."]),
    ("de", ["Dr. Müller kommt um 3.5 Uhr, z. B. morgen.", "Er bringt Obst, Gemüse usw. mit.",
            "Danach gehen wir."]),
    ("de", ['Er sagte: "Ich komme morgen."', "Dann ging er."]),
    ("de", ["Am 3. Oktober ist Feiertag.", "Das ist gut!"]),
    ("de", ["Er wurde im 19. Jahrhundert geboren."]),
    ("en", ["Dr. Smith paid $3.5 million, e.g. for the house.", "Mr. Jones disagreed."]),
    ("en", ['She said "I will come tomorrow."', "Then she left."]),
    ("en", ["It's 5 p.m. in the U.S. now.", "Let's go!"]),
    ("en", ["Stop bugging me.", "I'm busy."]),
]


@pytest.mark.parametrize(("language", "sentences"), CASES)
def test_a_paragraph_is_cut_into_its_sentences(language, sentences):
    assert split_sentences(" ".join(sentences), language) == sentences


def test_blank_lines_keep_one_empty_sentence():
    assert split_sentences("", "de") == [""]
    assert split_sentences("   ", "en") == [""]


def test_spacing_is_normalised_and_join_restores_a_line():
    sentences = split_sentences("  Ein Hund rennt.    Eine Frau liest.  ", "de")
    assert sentences == ["Ein Hund rennt.", "Eine Frau liest."]
    assert join_sentences(sentences) == "Ein Hund rennt. Eine Frau liest."
    assert join_sentences(["A dog runs.", "", " A woman reads. "]) == "A dog runs. A woman reads."


def test_an_unknown_language_falls_back_to_english_rules(caplog):
    assert split_sentences("Mr. Smith came. He sat down.", "xx") == [
        "Mr. Smith came.", "He sat down."]
    assert "no sentence-splitting rules for language 'xx'" in caplog.text
