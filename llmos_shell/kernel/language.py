"""Every word of a human language the kernel relies on, in one place: the English pack.

The kernel reads requests (which words are about content, where a clause ends, which verbs
store), writes prompts to the model (the system prompt, "answer now"), and teaches the router
what a tool without examples is asked for. All of that is English and lives here, in
:class:`English`; the rest of the kernel reads it through :data:`WORDS`. A language pack is
another object with the same attributes, put in place of :data:`WORDS` before the kernel runs.

The prompts' wording was measured with the default model (see README, How the kernel decides);
a pack for another language must measure its own.
"""

from __future__ import annotations

import re


class English:
    """The English pack."""

    # --- prompts (kernel/engine.py, plan_model.py, plan_router.py) ---------------------------

    system_prompt = (
        "You are llmos, the assistant built into a local operating system. "
        "When one of the functions can do what the user asks, call it, taking argument values from the "
        "user's words. When no function fits, answer directly in plain text. Keep answers short."
    )
    # Shown (not kept) before the reply that follows syscall results: small models otherwise
    # echo the results' JSON instead of answering.
    answer_now = {"role": "user", "content": "Based on the function results, what is your reply to my request?"}
    # The question again, after the results it is answered from (requests over the drivers).
    answer_from = "Using the text above, answer this request: {request}"
    # Shown before the reply when the model wanted a call the kernel did not make (an unrelated or
    # repeated one): left alone, it writes that call out as text ("name: delete_file, arguments: ...").
    no_function_fits = {"role": "user", "content": "Reply to my last message in plain words, without calling a function."}
    # What a routed step that failed leaves in the context, so that a later turn knows it was not done.
    could_not = "I could not do that: {error}"

    # The relevance test (plan_model.py) compares the likelihood of the function's own text (its
    # name and description) after the request and after a request that says nothing. This direction
    # scores only tokens about what the function does. The other one (the request's tokens after the
    # description) was swung by the request's incidental tokens (a city, a "?", an address): "Weather
    # in Oslo?" came out 0.48 nats a token less likely after get_weather's description than without.
    relevance_asked = "A user's request: {request}\nThe function that handles this request:\n"
    relevance_base = relevance_asked.format(request="Do what I ask.")
    relevance_function = "Function `{name}`: {description}"
    # The other direction, still asked of a call the model did not want to make: both must agree.
    # Its baseline is a function too, so that only what the description says makes the difference.
    request_given = "Function `{name}`: {description}\nA user's request that this function handles:\n"
    request_base = request_given.format(name="do", description="Does what it is asked.")

    # --- reading a request ------------------------------------------------------------------

    # Quoted text; an apostrophe inside a word ("Linus's", "it's") opens or closes nothing.
    quoted = re.compile(r"(?<!\w)'[^']{1,400}'(?!\w)|\"[^\"]{1,400}\"|“[^”]{1,400}”|‘[^’]{1,400}’")
    # Clause boundaries: "and", "then", "and then", ";" (quoted text is masked first).
    clause = re.compile(r"\s*(?:;|,?\s+and\s+then\s+|,?\s+then\s+|,?\s+and\s+)\s*", re.I)
    # "Please summarise: <the text>" — the text after a short lead-in is data, not the request.
    lead_in = re.compile(r"^([^:]{3,60}):\s+(\S.{20,})$", re.S)

    # Words that say nothing about what a request is about (for matching it to an argument's name).
    not_content = frozenset("""the and for with from into onto this that these those what which when where who how
are was were can could would should will you your yours our its it's not like such as any all also only than then
give leave out instead file files folder path text there here have has had been them they their one some
""".split())

    # A short request that gives no text of its own and opens like a follow-up ("And into Catalan?", "Now
    # in German please") or points back ("translate it into French") works on the text the same syscall
    # worked on last turn.
    follow_up = re.compile(r"(?i)^\s*(?:and|now|also|what about|how about|then|same|again|ok|okay)\b"
                           r"|\b(?:it|that|this|them|the same)\b")

    # A request for the items of a text that are of some kind: "Which errors are in ...", "list the
    # warnings in ...", "show me the lines about ...". Not "how many", "when", "is there": those the model
    # answers.
    selecting = re.compile(r"(?i)^\W*(?:(?:please|pls|can you|could you)\W+)?"
                           r"(?:which|what|list|show|find|give me|tell me|print|display|get|grep)\b")
    # Words of such a request that name no kind of item.
    not_a_kind = frozenset("""list show find give tell print display get grep lines line items item entries entry
everything anything mentioned mention mentions say says written there please can could about
does did have whats
""".split())

    @staticmethod
    def stem(word: str) -> str:
        """A plural's singular, roughly: "entries" -> "entry", "warnings" -> "warning"."""
        for ending in ("ies", "es", "s"):
            if word.endswith(ending) and len(word) - len(ending) >= 3:
                return word[:-len(ending)] + ("y" if ending == "ies" else "")
        return word

    # --- grounding.py: is a value the user's own words? ------------------------------------

    #: the ending a word of a value may carry in the text when inflections count ("child" in "children")
    inflection = r"[^\W\d_]{0,3}"

    @staticmethod
    def without_plural(word: str) -> str:
        """A plural either way: "adult" in "adults", "guitars" in "guitar shop"."""
        return word[:-1] if len(word) > 3 and word.endswith("s") else word

    # --- destinations.py: which path is where to store --------------------------------------

    # Verbs that put something somewhere (or make a text out of another, to be kept where said).
    keeps = re.compile(r"(?i)\b(?:sav(?:e|es|ed|ing)|writ(?:e|es|ing|ten)|wrote|put(?:s|ting)?|stor(?:e|es|ed|ing)"
                       r"|keep(?:s|ing)?|kept|cop(?:y|ies|ied|ying)|export\w*|record\w*|jot\w*|dump\w*|output\w*"
                       r"|plac(?:e|es|ed|ing)|add(?:s|ed|ing)?(?!\s+up)|append\w*|creat(?:e|es|ed|ing)|mak(?:e|es|ing)|made"
                       r"|mov(?:e|es|ed|ing)|generat\w*|produc\w*|overwr\w*|replac\w*|updat\w*|rewrit\w*|stash\w*"
                       r"|past(?:e|es|ed|ing)|summari[sz]\w*|translat\w*|convert\w*|turn\w*|transcrib\w*|merg\w*"
                       r"|combin\w*|concatenat\w*|render\w*|speak\w*|spoke\w*|say|said|read\w* (?:it )?(?:out|aloud))\b")
    # Where: a preposition (and words like "a new file called") right before the path.
    where = re.compile(r"(?i)\b(?:to|into|in|inside|onto|as|at|under|over|called|named)"
                       r"(?:\s+(?:the|a|an|new|same|my|this|that|another|file|folder|directory|document|text|audio"
                       r"|sound|wav|called|named))*\s*$")
    # A verb that replaces the file it is followed by ("overwrite /notes/todo.txt", "replace the text of ...").
    replaces = re.compile(r"(?i)\b(?:overwrit\w*|overwrote|replac\w*|updat\w*|rewrit\w*|creat\w*|fill|edit|chang\w*"
                          r"|clear|empty)\s+(?:(?:the|my|this|that|file|whole|entire|content|contents|text|of|in)\s+)*$")
    # Only a list separator between two paths: the second shares the role of the first.
    listed = re.compile(r"(?i)^\s*(?:,|,?\s*and|,?\s*or|&)\s*$")

    # --- router.py: what requests look like -------------------------------------------------

    #: Requests the model answers from what it knows: greetings, chat, general knowledge.
    chat_examples = (
        "Hello!", "Hi there", "Good morning!", "Thanks, that's great", "How are you today?",
        "Who are you?", "What can you do?", "Tell me a joke", "Write a short poem about autumn",
        "What is the capital of Japan?", "Who wrote Romeo and Juliet?", "Why is the sea salty?",
        "Explain what a computer's memory does", "Give me three ideas for a birthday present",
        "How many legs does a spider have?", "What does a CPU do?", "Can you recommend a good book?",
        "What is photosynthesis?", "Is it healthy to drink coffee every day?", "Goodbye, see you tomorrow",
        "Count to twenty", "List the days of the week", "Name three colours of the rainbow",
    )
    # A path in a request as the router compares it: by the kind of file it is.
    kind_words = (("image/", "the image file"), ("audio/", "the audio file"), ("video/", "the video file"),
                  ("inode/directory", "the folder"), ("text/", "the text file"))
    any_file = "the file"
    some_text = "some text"
    fetch_verb = re.compile(r"(?i)^(?:get|fetch|return|show|retrieve|read|look up|find|list)s?\s+"
                            r"(?:the\s+|a\s+|an\s+)?(.+)")

    def asked_for(self, description: str, name_words: str) -> list[str]:
        """A tool's first sentence and its name in words, as a user would ask for it ("Get current
        time in a timezone" -> "What is the current time in a timezone?"): what the router learns a
        tool without examples from."""
        asked = description[0].lower() + description[1:]
        texts = [description, name_words, f"Please {asked}", f"Can you {asked}?", f"I need to {name_words}",
                 f"{name_words} for me"]
        fetch = self.fetch_verb.match(description)
        if fetch:
            texts += [f"What is the {fetch.group(1)}?", f"Tell me the {fetch.group(1)}"]
        return texts


#: The language the kernel speaks. A language pack replaces this object.
WORDS = English()
