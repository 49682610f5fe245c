"""A further call is kept only if its new values come from the user's words; values nobody said
are taken out of a call where the schema allows."""

from llmos_shell.kernel.grounding import Source, all_said, grounded, new_values, refines, repeats, without_inventions


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


def test_the_same_values_swapped_between_parameters_are_not_a_second_call():
    first = {"name": "match", "arguments": {"team1": "Taylor Swift", "team2": "Maroon 5"}}
    swapped = {"name": "match", "arguments": {"team1": "Maroon 5", "team2": "Taylor Swift"}}
    assert not grounded(swapped, [first], REQUEST)


def test_a_piece_or_an_extension_of_an_earlier_value_is_not_a_second_thing():
    source = Source(["Messi's goals in the La Liga 2020-2021 season, in like new condition, New York and New Delhi"])
    first = call(player="Messi", season="2020-2021", condition="New", city="New York")
    assert not grounded(call(player="Messi", season="2021", condition="New", city="New York"), [first], source)
    assert not grounded(call(player="Messi", season="2020-2021", condition="Like New", city="New York"),
                        [first], source)
    assert grounded(call(player="Messi", season="2020-2021", condition="New", city="New Delhi"), [first], source)


def test_a_number_and_its_unit_are_two_words():
    source = Source(["Circles with radii of 5cm and 10 m"])
    assert source.has_string("cm") and source.has_string("m") and source.has_string("5 cm")
    assert source.has_number(5) and source.has_number(10)


def test_inflected_words_count_as_said_when_trimming_only():
    source = Source(["Tickets for children and adults"])
    assert source.has_string("child", inflected=True) and source.has_string("adult", inflected=True)
    assert not source.has_string("child")  # a further call must name exactly what was said
    assert not source.has_string("chi", inflected=True)
    assert not source.has_string("childhood", inflected=True)
    assert Source(["a guitar shop"]).has_string("Guitars", inflected=True)
    assert not Source(["a guitar shop"]).has_string("Guitars")


def test_new_values_compare_per_parameter_and_list_item():
    assert new_values(call(a=1, b=2), [call(a=1, b=3)]) == [2]
    assert new_values(call(a=1), [call(a=2), call(a=1)]) == []
    assert new_values(call(who=["adult"]), [call(who=["child", "adult"])]) == []


def test_a_string_must_appear_as_whole_words():
    source = Source(["Fetch the ancient empires Persian Empire and Mauryan Empire, and email addresses."])
    assert source.has_string("Mauryan  empire") and source.has_string("persian-empire")
    assert not source.has_string("Ancient Empire")   # "empires" is another word
    assert not source.has_string("add") and not source.has_string("")


RESTAURANTS = {
    "type": "object",
    "properties": {
        "location": {"type": "string"},
        "amenities": {"type": "array", "items": {"type": "string", "enum": ["Patio", "Wi-Fi", "Happy Hour"]}},
        "cuisine": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "open_until": {"type": "integer"},
        "team": {"type": "string"},
        "units": {"type": "string", "default": "miles"},
        "vegan": {"type": "boolean"},
    },
    "required": ["location", "cuisine"],
}
ASKED = Source(["Find a Sushi place in Boston with a patio."])


def trimmed(**arguments):
    return without_inventions({"name": "find", "arguments": arguments}, RESTAURANTS, ASKED)["arguments"]


def test_optional_values_nobody_said_go_back_to_their_default():
    assert trimmed(location="Boston", cuisine=["Sushi", "Ramen"], team="Lakers", open_until=23) == {
        "location": "Boston", "cuisine": ["Sushi", "Ramen"]}
    # a flag cannot be checked; a declared default is what leaving it out means anyway
    assert trimmed(location="Boston", cuisine=["Sushi", "Ramen"], vegan=True, units="miles") == {
        "location": "Boston", "cuisine": ["Sushi", "Ramen"], "vegan": True, "units": "miles"}


def test_required_values_stay_even_if_nobody_said_them():
    assert trimmed(location="Seattle", cuisine=["Thai", "Ramen"]) == {"location": "Seattle",
                                                                      "cuisine": ["Thai", "Ramen"]}


def test_lists_keep_the_items_that_were_said():
    assert trimmed(location="Boston", cuisine=["Sushi", "Ramen"], amenities=["Patio", "Wi-Fi", "Happy Hour"]) == {
        "location": "Boston", "cuisine": ["Sushi", "Ramen"], "amenities": ["Patio"]}
    # an optional list none of whose items was said is left out
    assert trimmed(location="Boston", cuisine=["Sushi", "Ramen"], amenities=["Wi-Fi"]) == {
        "location": "Boston", "cuisine": ["Sushi", "Ramen"]}
    assert trimmed(location="Boston", cuisine=["Sushi", "Ramen"], amenities=["Patios"]) == {
        "location": "Boston", "cuisine": ["Sushi", "Ramen"], "amenities": ["Patios"]}  # a plural is said


def test_a_list_trim_that_breaks_the_schema_is_not_made():
    # cuisine needs two items; only "Sushi" was said
    assert trimmed(location="Boston", cuisine=["Sushi", "Ramen"], team="Lakers") == {
        "location": "Boston", "cuisine": ["Sushi", "Ramen"]}


def spelled_out(**arguments):
    return all_said({"name": "find", "arguments": arguments}, RESTAURANTS, ASKED)


def test_a_call_is_spelled_out_when_every_value_was_said():
    assert spelled_out(location="Boston", cuisine=["sushi"], amenities=["Patios"])
    # flags and declared defaults say nothing either way
    assert spelled_out(location="Boston", vegan=True, units="miles")
    assert not spelled_out(location="Boston", units="km")
    assert not spelled_out(location="Seattle")                     # a required value nobody said
    assert not spelled_out(location="Boston", cuisine=["Sushi", "Ramen"])   # one list item is enough
    assert all_said({"name": "route", "arguments": {"to": {"city": "Boston"}}}, {}, ASKED)
    assert not all_said({"name": "route", "arguments": {"to": {"city": "Boston", "lat": 42.36}}}, {}, ASKED)


def test_a_call_with_more_arguments_and_the_same_values_refines_an_earlier_one():
    assert refines(call(a=3, b=-11, root_type="all"), call(a=3, b=-11))
    assert not refines(call(a=3, b=-11), call(a=3, b=-11))
    assert not refines(call(a=3, b=-4, root_type="all"), call(a=3, b=-11))


def test_a_call_that_only_repeats_values_already_used_brings_nothing_new():
    summarised = [{"name": "summarise", "arguments": {"path": "/inputs/report.txt", "length": "short"}}]
    read_file = {"type": "object", "properties": {"path": {"type": "string"},
                                                  "offset": {"type": "integer", "default": 0}}}
    assert repeats({"name": "read_file", "arguments": {"path": "/inputs/report.txt"}}, summarised, read_file)
    assert repeats({"name": "read_file", "arguments": {"path": "/inputs/report.txt", "offset": 0}},
                   summarised, read_file)  # the default says nothing
    assert not repeats({"name": "read_file", "arguments": {"path": "/inputs/report.txt", "offset": 100}},
                       summarised, read_file)
    assert repeats({"name": "search_files", "arguments": {"query": "report.txt"}}, summarised, {})
    assert repeats({"name": "list_files", "arguments": {}}, summarised, {})
    read = [{"name": "ocr", "arguments": {"path": "/inputs/sign.png"}}]
    assert not repeats({"name": "translate", "arguments": {"text": "MUSEUM", "target_lang": "Spanish"}}, read, {})
