"""Where the real TinyStories sample files are, and a synthetic corpus for when they are absent.

Tests, benchmarks and the README's main job read the shared files from `../shared/data` (beside the
checkout) or from `$NSLM_SHARED_DATA`; a machine without them falls back to `synthetic_stories`: stories
put together from story beats (an opening, what the hero likes, a meeting, talk, a problem and its fix,
an ending), each with several wordings, and a few hundred common TinyStories words. Made-up pet and toy
names, drawn with Zipf-like weights, give the corpus the long tail of rare words that real text has, so
that 1,500 stories fill a 1,024-token BPE and a 2,048-word vocabulary (with unknown words in another
seed's stories, as in a real validation split), like the real sample does.
"""

from __future__ import annotations

import itertools
import os
import random
import re
from functools import lru_cache
from pathlib import Path

STD_TRAIN_FILES = ("TinyStories-train-sample.txt", "TinyStoriesV2-GPT4-train-sample.txt", "TinyStories-train-more.txt")
STD_VALID_FILE = "TinyStories-valid-sample.txt"


def shared_data_dir() -> Path | None:
    """The shared data folder, or None when this machine has none."""
    env = os.environ.get("NSLM_SHARED_DATA")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve()
    candidates += [parent / "shared" / "data" for parent in here.parents]
    candidates.append(Path.cwd().parent / "shared" / "data")
    for path in candidates:
        if (path / "tinystories-std").is_dir():
            return path
    return None


def std_files() -> tuple[list[Path], Path] | None:
    """(train files, validation file) of `tinystories-std`, or None when absent."""
    root = shared_data_dir()
    if root is None:
        return None
    std = root / "tinystories-std"
    train = [std / name for name in STD_TRAIN_FILES if (std / name).is_file()]
    valid = std / STD_VALID_FILE
    if not train or not valid.is_file():
        return None
    return train, valid


_GIRLS = ["Lily", "Mia", "Sue", "Anna", "Lucy", "Emma", "Sara", "Amy", "Zoe", "Ella", "Kate", "Jane", "Mary", "Ruby",
          "Chloe", "Sophie", "Molly", "Hannah", "Nora", "Julia", "Lena", "Tina", "Kim", "Clara", "Olivia", "Ava",
          "Isabella", "Emily", "Abby", "Bella", "Lisa", "Susie", "Jenny", "Katie", "Megan", "Alice"]
_BOYS = ["Tom", "Ben", "Sam", "Max", "Tim", "Jack", "Leo", "Jake", "Finn", "Joe", "Bob", "Timmy", "Billy", "Danny",
         "Peter", "Oliver", "Noah", "Adam", "Luke", "Ryan", "Alex", "Eli", "Toby", "Jim", "Henry", "Lucas",
         "Mark", "David", "Johnny", "Bobby", "Kevin", "Harry", "Charlie", "Freddy", "Ethan", "Simon"]
_ANIMALS = ["cat", "dog", "bird", "frog", "bunny", "duck", "bear", "fox", "mouse", "owl", "puppy", "kitten", "squirrel",
            "turtle", "lion", "monkey", "pig", "cow", "horse", "sheep", "goat", "deer", "hedgehog", "rabbit", "fish",
            "bee", "butterfly", "elephant", "giraffe", "tiger", "penguin", "dolphin", "snail", "ladybug", "chick", "lamb",
            "pony", "raccoon", "beaver", "wolf", "zebra", "kangaroo", "hippo", "crab", "ant", "spider", "worm", "goose",
            "camel", "koala", "panda", "seal", "whale", "shark", "octopus", "parrot", "peacock", "swan", "bat",
            "moose", "otter", "lizard", "dragon", "unicorn", "dinosaur", "chicken", "rooster", "donkey", "puppy dog"]
_THINGS = ["ball", "kite", "box", "hat", "boat", "book", "doll", "truck", "car", "train", "drum", "balloon", "puzzle",
           "blanket", "teddy bear", "robot", "wagon", "bucket", "shovel", "crayon", "pencil", "scarf", "sock", "cup",
           "spoon", "bell", "key", "rope", "stick", "rock", "shell", "feather", "flag", "map", "lamp", "clock",
           "basket", "umbrella", "jar", "ribbon", "button", "marble", "whistle", "paper plane", "necklace", "crown",
           "mirror", "pillow", "bike", "swing", "ring", "star", "stone", "coin", "toy", "picture", "letter", "bag",
           "wand", "sword", "shield", "helmet", "bracelet", "block", "guitar", "piano", "trumpet", "flute", "net",
           "fishing rod", "jump rope", "sled", "tent", "ladder", "hammer", "brush", "comb", "towel", "bottle",
           "candle", "present", "card", "sticker", "tablet", "camera", "compass", "lantern", "rocket", "plane",
           "bus", "tractor", "skateboard", "scooter", "chair", "table", "bed", "door", "window", "fence", "gate"]
_FOODS = ["apple", "cake", "cookie", "banana", "sandwich", "soup", "pie", "carrot", "pear", "cherry", "cheese",
          "bread", "ice cream", "pizza", "muffin", "candy", "orange", "peach", "plum", "lemon", "cupcake", "egg",
          "strawberry", "pancake", "nut", "grape", "melon", "cracker", "jam sandwich", "bowl of soup", "potato",
          "tomato", "cucumber", "pumpkin", "ear of corn", "bowl of rice", "noodle", "waffle", "donut", "pretzel", "bag of popcorn",
          "lollipop", "bar of chocolate", "biscuit", "berry", "coconut", "pineapple", "mango", "kiwi", "salad", "taco"]
_PLACES = ["park", "garden", "forest", "house", "beach", "yard", "farm", "school", "zoo", "lake", "river", "hill",
           "meadow", "kitchen", "playground", "library", "shop", "pond", "field", "barn", "cave", "jungle", "town",
           "market", "bakery", "castle", "island", "mountain", "backyard", "treehouse", "woods", "village", "sea",
           "valley", "nest", "city", "street", "station", "airport", "harbor", "desert", "swamp", "orchard",
           "bridge", "tower", "attic", "basement", "bedroom", "bathroom", "garage", "hospital", "museum", "circus",
           "fair", "camp", "lighthouse", "palace", "church", "store", "pool", "road", "path", "hut", "igloo"]
_THING_ADJ = ["big", "little", "red", "shiny", "small", "soft", "blue", "pretty", "old", "new", "tiny", "huge",
              "round", "fluffy", "bright", "green", "yellow", "purple", "pink", "warm", "wet", "dirty", "clean",
              "heavy", "light", "sparkly", "colorful", "smooth", "bumpy", "special", "magic", "golden", "silver",
              "striped", "spotted", "broken", "long", "funny", "strange", "beautiful", "tall", "short", "fancy", "plain",
              "cozy", "wooden", "plastic", "paper", "glass", "metal", "fuzzy", "sticky", "squishy", "crunchy", "dusty",
              "muddy", "tidy", "messy", "empty", "full", "secret", "favorite", "lucky", "gigantic", "enormous"]
_CHAR_ADJ = ["little", "small", "happy", "kind", "brave", "silly", "gentle", "sleepy", "hungry", "curious",
             "friendly", "clever", "lazy", "busy", "shy", "funny", "young", "tiny", "grumpy", "cheerful", "careful",
             "smart", "playful", "polite", "naughty", "quiet", "loud", "fast", "strong", "fluffy", "bossy", "honest",
             "patient", "helpful", "jolly", "wise", "proud", "stubborn", "timid", "bold", "clumsy", "chubby", "fuzzy"]
_GOOD_FEELINGS = ["happy", "excited", "proud", "glad", "calm", "thankful", "brave", "surprised", "cheerful", "joyful"]
_BAD_FEELINGS = ["sad", "scared", "tired", "angry", "worried", "lonely", "upset", "nervous", "bored", "grumpy", "shy",
                 "cold", "hungry"]
_COLORS = ["red", "blue", "green", "yellow", "pink", "purple", "orange", "white", "black", "brown", "gold", "gray",
           "silver", "violet", "turquoise", "beige"]
# (what one loves to do, what they did)
_ACTIVITIES = [("play", "played"), ("run", "ran"), ("jump", "jumped"), ("sing", "sang"), ("dance", "danced"),
               ("draw", "drew pictures"), ("paint", "painted"), ("swim", "swam"), ("read books", "read books"),
               ("climb trees", "climbed trees"), ("build towers", "built towers"), ("dig in the sand", "dug in the sand"),
               ("ride a bike", "rode a bike"), ("fly a kite", "flew a kite"), ("bake cookies", "baked cookies"),
               ("play hide and seek", "played hide and seek"), ("pick flowers", "picked flowers"),
               ("look at the stars", "looked at the stars"), ("splash in puddles", "splashed in puddles"),
               ("skip", "skipped"), ("hop", "hopped"), ("explore", "explored"), ("chase butterflies", "chased butterflies"),
               ("play tag", "played tag"), ("make mud pies", "made mud pies"), ("collect shells", "collected shells"),
               ("sing songs", "sang songs"), ("tell jokes", "told jokes"), ("roll down the hill", "rolled down the hill"),
               ("play catch", "played catch"), ("blow bubbles", "blew bubbles"), ("build a fort", "built a fort"),
               ("plant seeds", "planted seeds"), ("feed the ducks", "fed the ducks"), ("make a snowman", "made a snowman"),
               ("jump rope", "jumped rope"), ("play the drums", "played the drums"), ("watch the clouds", "watched the clouds"),
               ("count the stars", "counted the stars"), ("sail boats", "sailed boats"), ("visit the animals", "visited the animals"),
               ("wash the car", "washed the car"), ("sweep the floor", "swept the floor"), ("knit scarves", "knitted scarves"),
               ("solve puzzles", "solved puzzles"), ("whistle tunes", "whistled tunes"), ("go fishing", "went fishing"),
               ("go camping", "went camping"), ("go sledding", "went sledding"), ("race around", "raced around")]
_GROWNUPS = [("mom", "she"), ("dad", "he"), ("grandma", "she"), ("grandpa", "he"), ("teacher", "she"),
             ("aunt", "she"), ("uncle", "he"), ("big sister", "she"), ("big brother", "he"), ("neighbor", "he"),
             ("nanny", "she"), ("mommy", "she"), ("daddy", "he"), ("granny", "she")]
_WEATHER = ["sunny", "rainy", "windy", "cold", "warm", "snowy", "cloudy", "foggy", "hot", "bright"]
_TIMES = ["morning", "afternoon", "evening", "night", "day"]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_HIDING = ["under a tree", "behind a rock", "in the grass", "under the bed", "next to the pond", "in a hole",
           "on a high shelf", "inside an old box", "under a bush", "near the fence", "by the river", "in the mud"]
_EXCLAIM = ["Wow", "Look", "Oh no", "Hooray", "Yay", "Oh my", "Hello", "Help", "Thank you", "Come here", "Hmm", "Oops"]
_MORALS = ["sharing is caring", "it is good to be kind", "friends help each other", "it is okay to ask for help",
           "being brave is not the same as not being scared", "you should always tell the truth",
           "it is good to say sorry", "patience is important", "it is fun to try new things",
           "listening to your parents keeps you safe", "working together makes hard things easy",
           "a friend in need is a friend indeed", "everyone is good at something", "you should never give up"]

# The story beats; {N} is the hero, {F} the friend, {X} and {Y} made-up names of a toy and an animal.
_OPENINGS = [
    "Once upon a time, there was a {cadj} {kind} named {N}.",
    "Once upon a time, in a {tadj} {place}, there lived a {cadj} {kind} named {N}.",
    "One {weather} {time}, a {cadj} {kind} named {N} went to the {place}.",
    "There was once a {kind} called {N} who lived near the {place}.",
    "{N} was a {cadj} {kind} who lived in a {tadj} house.",
    "It was a {weather} {day}. {N} the {kind} woke up early and looked out of the window.",
]
_DESCRIPTIONS = [
    "{He} loved to {act} with {his} {tadj} {thing}.",
    "{N} had a {tadj} {thing} that {he} took everywhere.",
    "Every day, {N} liked to {act} in the {place}.",
    "{His} favorite thing to eat was a {food}.",
    "{N} lived with {his} {grownup} near the {place}.",
    "{He} was {good} most days, but sometimes {he} felt {bad}.",
    "{N} had a {tadj} {thing} named {X}.",
    "{N} wanted to {act} more than anything.",
]
_EVENTS = [
    "One day, {N} found a {color} {thing2} {hiding}.",
    'One day, {N} saw a {cadj2} {animal} {hiding}. The {animal} said, "Hello, my name is {Y}."',
    "One {time}, {N} met {F}, a {cadj2} {fkind}.",
    "On {day}, {N} and {F} went to the {place2} to {act}.",
    "One day, {N} heard a strange noise coming from the {place2}. It was a {animal} named {Y}.",
    "One {weather} {time}, {F} came to visit {N}.",
]
_DIALOGUES = [
    '{N} said, "{Exclaim}! Can we {act} together?"',
    '{F} said, "Can I play with your {thing}?"',
    '{F} asked, "What is that?" {N} said, "It is a {tadj} {thing2}."',
    '{N} asked {his} {grownup}, "May I go to the {place2}?" {GHe} said, "Yes, but be careful."',
    '"I feel {bad}," said {N}. "Do not worry, I am here," said {F}.',
    '{F} said, "Let\'s {act}!" {N} said, "Yes, let\'s go!"',
    '{F} asked, "Where are you going?" "To the {place2}," said {N}.',
    '"I like your {thing}," said {F}. "Thank you," said {N}.',
]
_PROBLEMS = [
    "But then, the {thing} rolled away and got stuck {hiding}.",
    "Suddenly, it started to rain and {N} felt {bad}.",
    "But {F} did not want to share, and {N} was {bad}.",
    "Then {N} could not find {his} {thing} anywhere.",
    "The {thing} broke, and {N} began to cry.",
    "But the way to the {place2} was long, and {N} got {bad}.",
]
_RESOLUTIONS = [
    "{F} helped {N} look for it, and they found it {hiding}.",
    "{N}'s {grownup} came and gave {him} a big hug.",
    "{N} said sorry, and {F} smiled.",
    "They worked together and fixed the {thing}.",
    "After a while, the sun came out again and everything was fine.",
    "{N} took a deep breath and tried again, and this time it worked.",
]
_TOGETHER = [
    "They {past} all day and {F} was very {good}.",
    "Then they ate a {food} and {past} until it was time to go home.",
    "{N} and {F} {past} in the {place2} until the sun went down.",
]
_ENDINGS = [
    "In the end, {N} and {F} became best friends.",
    "From that day on, {N} always {past} with {F}.",
    "{N} learned that {moral}.",
    "That night, {N} went to bed feeling {good}.",
    "{N} was very {good} and smiled.",
    "It was the best {day} ever.",
]
_BEATS = (_OPENINGS, _DESCRIPTIONS, _EVENTS, _DIALOGUES, _PROBLEMS, _RESOLUTIONS, _TOGETHER, _ENDINGS)

# Syllables of made-up names, as TinyStories gives its pets and toys ("a bunny named Pip").
_ONSETS = ["b", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "ch", "sh", "fl",
           "gr", "pl", "tr", "sn", "br"]
_VOWELS = ["a", "e", "i", "o", "u", "oo", "ee", "ay", "ie", "y"]
_CODAS = ["", "", "", "", "n", "m", "p", "x", "l", "s", "ck", "t", "by", "ty", "sy"]


@lru_cache(maxsize=1)
def _made_up_names(n: int = 6000) -> tuple[list[str], list[float]]:
    """`n` made-up names (the same for every seed, so common ones recur across corpora) and their cumulative
    Zipf-like weights. None is a word of the templates or lists, so every word keeps one casing."""
    words = [_GIRLS, _BOYS, _ANIMALS, _THINGS, _FOODS, _PLACES, _THING_ADJ, _CHAR_ADJ, _GOOD_FEELINGS, _BAD_FEELINGS,
             _COLORS, [w for pair in _ACTIVITIES + _GROWNUPS for w in pair], _WEATHER, _TIMES, _DAYS, _HIDING,
             _EXCLAIM, _MORALS, *_BEATS]
    known = {w for group in words for text in group for w in re.findall(r"[a-z]+", text.lower())}
    rng = random.Random(20240607)
    names: list[str] = []
    while len(names) < n:
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(rng.choice((1, 2, 2, 2))))
        word += rng.choice(_CODAS)
        if len(word) >= 3 and word not in known:
            known.add(word)
            names.append(word.capitalize())
    return names, list(itertools.accumulate(1 / (rank + 200) for rank in range(n)))


def _character(rng: random.Random) -> dict[str, str]:
    """A girl or a boy, or (half the time) an animal, most often with a made-up name."""
    girl = rng.random() < 0.5
    he, his, him = ("she", "her", "her") if girl else ("he", "his", "him")
    name = rng.choice(_GIRLS if girl else _BOYS)
    kind = "girl" if girl else "boy"
    if rng.random() < 0.5:
        kind = rng.choice(_ANIMALS)
        if rng.random() < 0.8:
            names, weights = _made_up_names()
            name = rng.choices(names, cum_weights=weights)[0]
    return {"name": name, "kind": kind, "he": he, "his": his, "him": him}


def _story(rng: random.Random) -> str:
    hero = _character(rng)
    friend = _character(rng)
    while friend["name"] == hero["name"]:
        friend = _character(rng)
    grownup, grownup_he = rng.choice(_GROWNUPS)
    act, past = rng.choice(_ACTIVITIES)
    names, weights = _made_up_names()
    toy, animal_name = rng.choices(names, cum_weights=weights, k=2)
    slots = {"N": hero["name"], "kind": hero["kind"], "he": hero["he"], "He": hero["he"].capitalize(),
             "his": hero["his"], "His": hero["his"].capitalize(), "him": hero["him"], "F": friend["name"],
             "fkind": friend["kind"], "grownup": grownup, "GHe": grownup_he.capitalize(), "act": act, "past": past,
             "X": toy, "Y": animal_name, "cadj": rng.choice(_CHAR_ADJ), "cadj2": rng.choice(_CHAR_ADJ),
             "tadj": rng.choice(_THING_ADJ), "place": rng.choice(_PLACES), "place2": rng.choice(_PLACES),
             "thing": rng.choice(_THINGS), "thing2": rng.choice(_THINGS), "food": rng.choice(_FOODS),
             "animal": rng.choice(_ANIMALS), "good": rng.choice(_GOOD_FEELINGS), "bad": rng.choice(_BAD_FEELINGS),
             "color": rng.choice(_COLORS), "weather": rng.choice(_WEATHER), "time": rng.choice(_TIMES),
             "day": rng.choice(_DAYS), "hiding": rng.choice(_HIDING), "Exclaim": rng.choice(_EXCLAIM),
             "moral": rng.choice(_MORALS)}
    beats = [rng.choice(_OPENINGS), *rng.sample(_DESCRIPTIONS, rng.randint(1, 2)), rng.choice(_EVENTS),
             *rng.sample(_DIALOGUES, rng.randint(1, 2))]
    if rng.random() < 0.7:
        beats += [rng.choice(_PROBLEMS), rng.choice(_RESOLUTIONS)]
    if rng.random() < 0.6:
        beats.append(rng.choice(_TOGETHER))
    beats += rng.sample(_ENDINGS, rng.randint(1, 2))
    text = " ".join(beat.format(**slots) for beat in beats)
    return re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", text)  # "a apple" -> "an apple"


def synthetic_stories(n: int, seed: int = 0) -> list[str]:
    """`n` short, grammatical, TinyStories-like stories of about 90 words (deterministic for a seed)."""
    rng = random.Random(seed)
    return [_story(rng) for _ in range(n)]
