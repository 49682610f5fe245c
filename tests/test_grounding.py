"""A further call is kept only if its new values come from the user's words."""

from llmos_shell.grounding import Source, grounded, new_values


def call(**arguments):
    return {"name": "play", "arguments": arguments}


REQUEST = Source(["Play Taylor Swift for 20 minutes and Maroon 5 for 15 minutes, at 5% volume."])


def test_a_second_call_with_values_from_the_request_is_grounded():
    first = call(artist="Taylor Swift", duration=20)
    assert grounded(call(artist="Maroon 5", duration=15), [first], REQUEST)


def test_invented_or_repeated_values_are_not():
    first = call(artist="Taylor Swift", duration=20)
    assert not grounded(call(artist="Maroon 5", duration=30), [first], REQUEST)      # 30: nobody said it
    assert not grounded(call(artist="Coldplay", duration=15), [first], REQUEST)
    assert not grounded(call(artist="Taylor Swift", duration=20), [first], REQUEST)  # the same call
    assert not grounded(call(artist="Taylor Swift", duration=20, loud=True), [first], REQUEST)  # a flag only


def test_values_are_compared_loosely_but_not_by_fragments():
    first = call(artist="Taylor Swift", duration=20)
    assert grounded(call(artist="maroon  5", duration=15), [first], REQUEST)       # case and spaces
    assert grounded(call(artist="Maroon 5", volume=0.05), [first], REQUEST)       # 5% is 0.05
    assert grounded(call(artist="Maroon 5", duration=15.0), [first], REQUEST)
    assert not grounded(call(artist="Maroon 50", duration=15), [first], REQUEST)


def test_lists_count_each_item_and_earlier_results_are_a_source():
    source = Source(["Look up these shows.", '{"shows": ["Friends", "The Office"]}'])
    first = {"name": "shows", "arguments": {"service": "Netflix", "shows": ["Friends"]}}
    assert grounded({"name": "shows", "arguments": {"service": "Netflix", "shows": ["The Office"]}},
                    [first], source)
    assert not grounded({"name": "shows", "arguments": {"service": "Netflix", "shows": ["The Office", "Lost"]}},
                        [first], source)


def test_new_values_compare_per_parameter_and_list_item():
    assert new_values(call(a=1, b=2), [call(a=1, b=3)]) == [2]
    assert new_values(call(a=1), [call(a=2), call(a=1)]) == []
    assert new_values(call(who=["adult"]), [call(who=["child", "adult"])]) == []


def test_a_string_must_appear_as_whole_words():
    source = Source(["Fetch the ancient empires Persian Empire and Mauryan Empire, and email addresses."])
    assert source.has_string("Mauryan  empire") and source.has_string("persian-empire")
    assert not source.has_string("Ancient Empire")   # "empires" is another word
    assert not source.has_string("add") and not source.has_string("")
