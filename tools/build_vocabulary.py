"""Write the bundled SBG vocabularies (natural.json, shapes.json) from the curated lists below.

    python tools/build_vocabulary.py          # writes both files into lib_clipcap/sbg/data/

The natural-photo vocabulary replaces the original's noisy pickles: about 1000 real English keywords of the kind
Flickr/COCO captions use (lemmas: singular nouns, base adjectives, adverbs), filed under the right part of speech,
plus the category hierarchy of the SBG paper. Every word is checked against the system word list
(``/usr/share/dict/words``, Debian package ``wamerican``) when it is installed, so a typo cannot slip in; the
vocabulary loader validates the rest (shape of words, duplicates, templates, fields).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "lib_clipcap" / "sbg" / "data"  # where the package reads them

# ---------------------------------------------------------------------------------------------------- keywords
NOUNS = """
man woman boy girl child kid baby toddler teenager adult person people crowd group family couple friend team
player rider biker cyclist runner swimmer surfer skier snowboarder skateboarder climber hiker tourist worker
student teacher doctor nurse chef cook waiter waitress soldier officer policeman firefighter farmer fisherman
musician guitarist drummer singer dancer performer artist painter photographer clown cowboy bride groom athlete
gymnast boxer wrestler referee coach goalie pitcher batter catcher jockey lifeguard vendor customer audience
spectator fan driver passenger pedestrian parent mother father son daughter brother sister grandmother
grandfather lady gentleman guy

dog puppy cat kitten horse pony foal cow calf bull sheep lamb goat pig chicken rooster duck goose swan bird
pigeon seagull parrot eagle owl penguin flamingo pelican heron crow fish shark dolphin whale seal turtle frog
lizard snake butterfly bee insect elephant giraffe zebra lion tiger bear monkey deer camel kangaroo squirrel
rabbit mouse donkey mule llama poodle terrier retriever collie husky beagle bulldog greyhound dalmatian
chihuahua animal pet

tree palm pine oak branch leaf trunk bush shrub hedge grass lawn flower rose tulip sunflower daisy lily plant
vine moss weed hay cactus bouquet

garden field meadow farm forest woods jungle park yard backyard playground beach shore coast sand wave surf
ocean sea water lake pond river stream creek waterfall pool fountain puddle mud rock stone boulder cliff hill
mountain peak valley canyon desert dune snow ice glacier sky cloud sun sunset sunrise sunlight shade shadow
rainbow rain fog storm wind horizon landscape nature countryside island

city town village street road sidewalk path trail alley highway bridge tunnel intersection crosswalk corner
parking_lot building house home cabin hut barn shed church temple tower skyscraper castle palace museum
library school hospital station airport stadium arena court gym restaurant cafe bar pub kitchen room bedroom
bathroom hallway lobby office classroom store shop market mall stall booth tent stage studio theater window
door wall floor ceiling roof stairs staircase step porch balcony fence gate railing pole post sign billboard
poster banner flag statue sculpture monument mural graffiti lamp light streetlight candle fire firework smoke
dock pier harbor subway_station bus_stop fire_hydrant

car truck bus van taxi jeep tractor motorcycle bicycle bike scooter skateboard train subway tram boat ship
sailboat canoe kayak yacht airplane plane jet helicopter wheel tire engine traffic

helmet ball football basketball baseball soccer tennis volleyball golf hockey rugby racket bat glove net goal
hoop frisbee kite surfboard snowboard ski sled rope swing slide trampoline toy doll balloon teddy_bear
soccer_ball tennis_court life_jacket

umbrella bag backpack purse suitcase basket box bucket bottle cup mug glass plate bowl fork knife spoon pan pot
tray food meal breakfast lunch dinner pizza sandwich burger cake bread fruit apple banana vegetable salad
coffee tea drink beer wine ice_cream hot_dog donut water_bottle

table chair bench couch sofa bed desk shelf counter cabinet mirror picture painting book newspaper magazine
paper map phone camera computer laptop screen television keyboard microphone guitar drum piano violin trumpet
saxophone instrument band concert show parade festival party wedding race game match competition ceremony
celebration

shirt t-shirt jacket coat sweater hoodie vest dress skirt suit uniform costume jeans pants shorts swimsuit
bikini hat cap hood scarf tie sunglasses glasses mask boot shoe sneaker sandal sock belt necklace jewelry
tattoo wetsuit outfit clothes clothing apron

hair beard mustache face head hand arm leg foot eye mouth smile shoulder knee finger lap body

trick jump stunt dive splash air ground land area view scene distance background front side edge top bottom
middle center line row pile stack pair number letter word writing photo image sport activity exercise work job
lesson class music song dance play fun vacation trip walk ride run climb swim day night morning afternoon
evening summer winter spring autumn weather darkness color pattern stripe spot design shape circle metal wood
plastic leather fabric brick cart stroller wheelchair carriage wagon trailer crane ladder hose tool hammer
shovel broom chain cage container bubble

toilet sink oven refrigerator microwave stove vase clock remote scissors toothbrush broccoli carrot luggage rug
pillow blanket curtain towel bathtub shower faucet napkin menu moon star dawn pasture orchard vineyard swamp
marsh lighthouse windmill skyline neighborhood plaza courtyard patio driveway garage warehouse factory
scaffolding bulldozer ambulance fire_truck police_car limousine ferry raft paddle oar sail anchor mast
fishing_rod campfire sleeping_bag hammock picnic skate_park ramp halfpipe snowman snowball icicle leash collar
stick saddle rodeo ranch wheelbarrow fireplace tablet headphones earring bracelet ring watch headband bandana
ponytail braid wig paint brush canvas easel chalk blackboard notebook pen pencil trophy medal jersey scoreboard
bleachers marathon tournament mascot
"""

ADJECTIVES = """
red orange yellow green blue purple pink brown black white gray silver gold golden tan beige dark light bright
colorful striped spotted plaid checkered patterned plain big large huge giant small little tiny tall short long
wide narrow thick thin high low deep shallow heavy round square flat steep curly straight wavy young old elderly
new happy smiling laughing sad angry serious tired excited surprised curious playful friendly scared calm quiet
loud busy crowded empty full open closed wet dry muddy dusty dirty clean sandy rocky grassy snowy icy sunny
cloudy rainy foggy windy stormy hot cold warm cool sunlit shady shiny wooden concrete paved leafy blooming
floral wild domestic furry fluffy hairy bald bearded blond brunette shirtless barefoot dressed formal casual
traditional modern ancient historic urban rural tropical fresh ripe delicious cooked frozen fried sweet tasty
healthy beautiful pretty cute handsome strange funny fancy elegant simple neat messy broken rusty professional
athletic muscular strong fast slow quick competitive outdoor indoor public private local male female several
many few various different same other double single multiple numerous entire whole main central distant nearby
upper lower rear left right inner outer covered filled decorated painted lit illuminated reflective transparent
blurry dim multicolored black-and-white vintage antique electric wireless mobile portable stuffed inflatable
aerial underwater overhead bare tangled lush framed
"""

ADVERBS = """
together outside outdoors indoors inside nearby away alone around along across behind ahead apart forward
backward backwards sideways upside_down downhill uphill downstairs upstairs downstream upstream up down out off
back over far close closely quickly slowly hard gently carefully happily playfully intently eagerly proudly
casually quietly loudly brightly directly sharply barely almost nearly just still also only very really too
quite partly mostly completely entirely halfway midair overboard ashore aboard abroad offshore home upward
downward outward everywhere alongside underneath upright headfirst side_by_side hand_in_hand face_down
"""

# ---------------------------------------------------------------------------------------------------- hierarchy
PIC = "picture of {}."

SCENERY = {
    "beach": ["sand", "wave", "shore", "surf", "seashell", "lifeguard tower", "beach umbrella", "towel", "pier"],
    "ocean": ["wave", "boat", "horizon", "surf", "spray", "ship", "buoy"],
    "mountain": ["peak", "cliff", "slope", "summit", "ridge", "rock", "trail", "snow"],
    "forest": ["tree", "trunk", "log", "leaf", "path", "moss", "fern", "branch"],
    "desert": ["sand", "dune", "cactus", "rock", "canyon"],
    "field": ["grass", "meadow", "wildflower", "hay", "fence", "crop"],
    "park": ["bench", "lawn", "tree", "path", "fountain", "playground", "pond"],
    "city street": ["sidewalk", "crosswalk", "building", "traffic", "storefront", "streetlight", "taxi"],
    "river": ["bank", "bridge", "current", "rock", "canoe", "rapids"],
    "lake": ["dock", "shore", "reflection", "canoe", "pier", "ripple"],
    "snowy landscape": ["snow", "ice", "slope", "snowbank", "icicle"],
    "countryside": ["farmhouse", "barn", "fence", "hill", "pasture"],
    "garden": ["flower", "hedge", "bush", "flowerbed", "path"],
    "playground": ["slide", "swing", "sandbox", "jungle gym", "seesaw"],
    "sports field": ["goal", "net", "grass", "sideline", "bleachers"],
    "stadium": ["crowd", "bleachers", "field", "scoreboard", "track"],
    "swimming pool": ["water", "lane", "diving board", "ladder", "splash"],
    "waterfall": ["cliff", "mist", "rock", "pool", "spray"],
    "road": ["car", "lane", "asphalt", "traffic", "curb"],
    "market": ["stall", "vendor", "crowd", "fruit", "awning"],
    "stage": ["spotlight", "microphone", "curtain", "audience", "band"],
    "kitchen": ["stove", "counter", "sink", "refrigerator", "cabinet", "oven"],
    "living room": ["couch", "television", "rug", "lamp", "pillow", "coffee table"],
    "bedroom": ["bed", "pillow", "blanket", "closet", "dresser"],
    "bathroom": ["sink", "mirror", "bathtub", "towel", "shower"],
    "restaurant": ["table", "menu", "waiter", "plate", "booth"],
    "classroom": ["desk", "blackboard", "student", "teacher", "book"],
    "office": ["desk", "computer", "chair", "monitor", "paperwork"],
    "gym": ["treadmill", "mat", "weights", "locker", "court"],
    "shop": ["shelf", "counter", "customer", "display", "cashier"],
}
INDOOR = ["kitchen", "living room", "bedroom", "bathroom", "restaurant", "classroom", "office", "gym", "shop",
          "stage", "indoors"]

PEOPLE = ["a man", "a woman", "a boy", "a girl", "a baby", "an old man", "an old woman", "two men", "two women",
          "two boys", "two girls", "a man and a woman", "a boy and a girl", "two children", "three people",
          "four people", "a family", "a couple", "a group of people", "a crowd of people", "a team"]

OCCUPATIONS = ["police officer", "firefighter", "doctor", "nurse", "chef", "soldier", "construction worker",
               "musician", "guitarist", "drummer", "singer", "dancer", "football player", "basketball player",
               "soccer player", "baseball player", "tennis player", "skateboarder", "surfer", "skier",
               "snowboarder", "cyclist", "runner", "swimmer", "rock climber", "photographer", "painter", "farmer",
               "fisherman", "student", "teacher", "tourist", "street vendor", "clown", "cowboy", "bride", "groom",
               "waiter", "mechanic", "lifeguard", "hiker", "jockey", "boxer", "wrestler", "gymnast", "cheerleader",
               "referee", "street performer", "businessman", "shopper"]

COLOURS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "white", "black"]
GARMENTS = ["shirt", "jacket", "dress", "coat", "uniform"]

ANIMALS = {
    "dog": ["puppy", "terrier", "poodle", "labrador", "retriever", "collie", "dalmatian", "husky", "beagle",
            "bulldog", "greyhound", "chihuahua", "german shepherd", "sheepdog", "spaniel", "pug"],
    "cat": ["kitten", "tabby cat", "black cat", "siamese cat"],
    "horse": ["pony", "foal", "stallion", "mare"],
    "bird": ["pigeon", "seagull", "duck", "goose", "swan", "parrot", "eagle", "owl", "penguin", "flamingo",
             "pelican", "heron", "crow", "sparrow", "hawk"],
    "farm animal": ["cow", "calf", "bull", "sheep", "lamb", "goat", "pig", "chicken", "rooster", "donkey", "llama"],
    "wild animal": ["elephant", "giraffe", "zebra", "lion", "tiger", "bear", "monkey", "deer", "kangaroo",
                    "camel", "rhinoceros", "hippopotamus", "wolf", "fox", "squirrel", "rabbit"],
    "sea animal": ["fish", "dolphin", "whale", "seal", "shark", "octopus", "jellyfish", "crab"],
    "reptile": ["turtle", "lizard", "snake", "crocodile", "alligator", "iguana"],
    "insect": ["butterfly", "bee", "ant", "beetle", "dragonfly", "ladybug", "grasshopper"],
}

PLANTS = {
    "tree": ["oak", "pine", "palm tree", "maple", "birch", "willow", "evergreen", "cherry blossom"],
    "flower": ["rose", "tulip", "sunflower", "daisy", "lily", "orchid", "dandelion", "lavender"],
    "grass": ["lawn", "hay", "reed", "tall grass", "weed"],
    "bush": ["shrub", "hedge", "thicket"],
    "crop": ["corn", "wheat", "rice", "vineyard", "orchard"],
    "potted plant": ["houseplant", "flowerpot", "planter"],
    "cactus": ["succulent", "desert plant"],
    "vine": ["ivy", "creeper"],
}

OBJECTS = {
    "vehicle": ["car", "bus", "truck", "bicycle", "motorcycle", "train", "boat", "airplane", "taxi", "van",
                "scooter", "tractor", "helicopter", "subway"],
    "sports equipment": ["ball", "frisbee", "skateboard", "surfboard", "snowboard", "skis", "tennis racket",
                         "baseball bat", "kite", "helmet", "goal", "net"],
    "furniture": ["chair", "table", "bench", "couch", "bed", "desk", "shelf", "stool"],
    "tableware": ["plate", "cup", "bowl", "knife", "fork", "spoon", "bottle", "glass", "mug"],
    "food": ["pizza", "sandwich", "cake", "fruit", "banana", "apple", "vegetable", "bread", "ice cream", "hot dog"],
    "electronics": ["phone", "laptop", "camera", "television", "computer", "keyboard", "headphones"],
    "musical instrument": ["guitar", "drum", "piano", "violin", "microphone", "trumpet", "saxophone", "accordion"],
    "building": ["house", "church", "tower", "skyscraper", "bridge", "fence", "wall", "barn", "cabin"],
    "bag": ["backpack", "purse", "handbag", "suitcase", "shopping bag"],
    "toy": ["doll", "teddy bear", "balloon", "toy car", "blocks", "bubbles"],
    "sign": ["street sign", "stop sign", "traffic light", "poster", "banner", "billboard"],
    "tool": ["hammer", "shovel", "ladder", "rake", "broom", "hose"],
}

TIMES = ["morning", "daytime", "afternoon", "sunset", "dusk", "evening", "night", "sunrise"]
WEATHER = ["sunny weather", "cloudy weather", "rainy weather", "snowy weather", "foggy weather", "windy weather"]

ACTIVITIES = {
    "moving": ["walking", "running", "jumping", "climbing", "swimming", "diving", "riding", "crossing"],
    "resting": ["sitting", "standing", "lying", "leaning", "waiting", "sleeping", "relaxing", "posing"],
    "playing sports": ["playing", "kicking", "throwing", "catching", "surfing", "skiing", "skateboarding",
                       "cycling", "racing", "hitting"],
    "socializing": ["talking", "smiling", "laughing", "hugging", "kissing", "waving", "cheering", "dancing"],
    "working": ["working", "cooking", "cleaning", "building", "selling", "fixing", "carrying", "pushing"],
    "leisure": ["reading", "eating", "drinking", "fishing", "shopping", "singing", "painting", "watching"],
    "animal behavior": ["barking", "grazing", "flying", "fetching", "chasing", "sniffing", "digging", "perching"],
}


def _words(block: str) -> list[str]:
    """Whitespace-separated entries; ``_`` joins the words of a multi-word entry (``ice_cream``)."""
    out: list[str] = []
    for w in block.split():
        w = w.replace("_", " ")
        if w not in out:
            out.append(w)
    return out


def natural() -> dict:
    nouns = _words(NOUNS)
    # A word is filed under one part of speech: the first list that has it wins (nouns, adjectives, adverbs).
    adjectives = [w for w in _words(ADJECTIVES) if w not in nouns]
    adverbs = [w for w in _words(ADVERBS) if w not in nouns and w not in adjectives]
    level = lambda name, labels, **kw: {"name": name, "template": kw.pop("template", PIC), "labels": labels, **kw}
    return {
        "format": "clipcap-sbg-vocabulary",
        "version": 1,
        "name": "natural",
        "description": "Curated keywords for natural photos (people, animals, places, objects, colours, actions "
                       "around them) with the SBG category hierarchy. Built by lib_clipcap/sbg/data/"
                       "build_vocabulary.py.",
        "keyword_template": "{}",
        "keywords": {"noun": nouns, "adjective": adjectives, "adverb": adverbs},
        "hierarchy": {
            "prime": {"template": PIC,
                      "subjects": {"landscape": "landscape", "people": "people", "animal": "animal",
                                   "plant": "plant", "object": "some object"},
                      "max_combination": 3, "always": ["landscape", "object"]},
            "branches": {
                "landscape": [level("scenery", SCENERY, tertiary_top=3)],
                "people": [level("people", {p: [] for p in PEOPLE}),
                           level("occupation", {o: [] for o in OCCUPATIONS}),
                           level("clothing", {f"{c} {g}": [] for g in GARMENTS for c in COLOURS},
                                 template="wearing {}.")],
                "animal": [level("animal", ANIMALS, tertiary_top=1)],
                "plant": [level("plant", PLANTS, tertiary_top=3)],
                "object": [level("object", OBJECTS, tertiary_top=3)],
            },
            "context": [
                level("time", {t: [] for t in TIMES}, template="picture during {}."),
                level("weather", {w: [] for w in WEATHER}, template="picture during {}.", skip_when_indoor=True),
                level("activity", ACTIVITIES, template="activity is {}.", tertiary_top=1, add_label=False,
                      requires=["people", "animal"]),
            ],
            "indoor": INDOOR,
        },
    }


def shapes() -> dict:
    """The synthetic shapes world (lib_clipcap.shapes): colours, shapes, sizes and backgrounds."""
    colours = ["red", "green", "blue", "yellow", "purple"]
    kinds = ["circle", "square", "triangle"]
    objects = {f"{c} {k}": [] for c in colours for k in kinds}
    return {
        "format": "clipcap-sbg-vocabulary",
        "version": 1,
        "name": "shapes",
        "description": "The synthetic shapes world of the test fixtures: one or two coloured shapes on a white or "
                       "black background.",
        "keyword_template": "{}",
        "keywords": {"noun": kinds + ["shape", "background"],
                     "adjective": colours + ["small", "large", "white", "black"]},
        "hierarchy": {
            "prime": {"template": "picture of {}.", "subjects": {"one": "a shape", "two": "a shape and a shape"},
                      "max_combination": 1, "always": []},
            "branches": {
                "one": [{"name": "object", "template": "a {}.", "labels": objects},
                        {"name": "size", "template": "a {} shape.", "labels": {"small": [], "large": []}}],
                "two": [{"name": "objects", "template": "a {}.", "labels": objects, "top": 2}],
            },
            "context": [{"name": "background", "template": "on a {} background.",
                         "labels": {"white": [], "black": []}}],
            "indoor": [],
        },
    }


# Real words that the wamerican list happens to lack ("t" is the t of t-shirt).
_KNOWN_EXTRA = {"cafe", "seagull", "shirtless", "snowbank", "snowboarder", "wetsuit", "halfpipe", "t"}


def _spelling_problems(doc: dict) -> list[str]:
    """Words (of every keyword, label and tertiary word) missing from the system word list."""
    dict_file = Path("/usr/share/dict/words")
    if not dict_file.is_file():
        print("note: /usr/share/dict/words not found (apt-get install wamerican); spelling not checked",
              file=sys.stderr)
        return []
    known = {w.strip().lower() for w in dict_file.read_text(encoding="utf-8", errors="replace").split()}
    texts = [w for ws in doc["keywords"].values() for w in ws]
    h = doc.get("hierarchy") or {}
    levels = [lv for lvs in h.get("branches", {}).values() for lv in lvs] + h.get("context", [])
    for lv in levels:
        for label, words in lv["labels"].items():
            texts.append(label)
            texts.extend(words)
    texts += h.get("indoor", [])
    bad = []
    for t in texts:
        for part in t.replace("-", " ").split():
            if part not in known and part not in _KNOWN_EXTRA:
                bad.append(f"{part!r} in {t!r}")
    return sorted(set(bad))


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from lib_clipcap.sbg.vocabulary import vocabulary_from_dict

    status = 0
    for name, doc in (("natural", natural()), ("shapes", shapes())):
        vocab = vocabulary_from_dict(doc, source=name)  # full validation
        problems = _spelling_problems(doc)
        if problems:
            print(f"{name}: not in the word list: {', '.join(problems)}", file=sys.stderr)
            status = 1
        path = vocab.save(DATA / f"{name}.json")
        kw = doc["keywords"]
        print(f"wrote {path}: " + ", ".join(f"{len(v)} {k}s" for k, v in kw.items())
              + f" = {len(vocab.words)} keywords")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
