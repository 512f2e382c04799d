"""The built-in `answer_match` rule reward: full credit for the answer itself, partial credit
for a sentence that names it and no other label, nothing otherwise."""

from llmtune.methods.preference.rewards import answer_match


def test_answer_match_scores_the_answer_and_sentences_that_name_only_it():
    replies = ["Positive.", "The review is positive.", "It is positive, not negative.", "negative", "I like it"]
    got = answer_match(replies, ["positive"] * 5, labels=["positive", "negative"], partial=0.5)
    assert got == [1.0, 0.5, 0.0, 0.0, 0.0]
    chat = [[{"role": "assistant", "content": "Sci/Tech"}], [{"role": "assistant", "content": "World"}]]
    assert answer_match(chat, ["Sci/Tech", "Sports"]) == [1.0, 0.0]
