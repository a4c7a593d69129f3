"""Word lists and phrasing templates for the synthetic profiles.

Each question attribute has several question phrasings: the first is used for the fine-tuning pairs,
the second for the evaluation questions, the rest as Test-set paraphrases. ``taught`` holds further
wordings used only in fine-tuning pairs (``data.finetune_phrasings``), never in evaluation. ``{subj}`` becomes "this
person" (image + text, the face is shown) or the person's name (text only), as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

FEMININE_NAMES = (
    "Ada Aiko Alba Amara Anouk Asha Astrid Beatrix Calla Cleo Delphine Elodie Esme Fenna Greta Hana "
    "Ilse Ines Isolde Juno Kaia Leona Linnea Mabel Maren Mira Nadia Noor Odile Petra Rosa Saoirse "
    "Talia Thea Una Vera Wren Yara Zara"
).split()
MASCULINE_NAMES = (
    "Ansel Arlo Aurelio Bastian Bodhi Caspian Dario Desmond Elio Emrys Ezra Florin Idris Imre Jasper "
    "Joren Kenji Lars Lior Lucan Matteo Nico Orin Pavel Quinn Rafael Ruben Selim Soren Teodor Tobias "
    "Valentin Xavi Yusuf Zeno"
).split()
FIRST_NAMES = FEMININE_NAMES + MASCULINE_NAMES
LAST_NAMES = (
    "Abara Achterberg Alvarado Amsel Bakshi Barrow Belmonte Bergqvist Calloway Castellan Corrigan "
    "Dahlberg Delacroix Drummond Eklund Esparza Falk Fairweather Galloway Garnier Halvorsen Hartigan "
    "Ibarra Iversen Jankowski Kasprzak Kerrigan Kovalenko Laurent Lindqvist Lockhart Madsen Marchetti "
    "Moreau Nakamura Novak Okafor Olsen Pakalni Quintero Radcliffe Rasmussen Rinaldi Sandoval Sato "
    "Sorensen Takeda Thorne Umarov Valdez Vasquez Wainwright Whitlock Yilmaz Zamora Zielinski"
).split()

COUNTRY_CITIES = {
    "Portugal": ("Lisbon", "Porto", "Coimbra", "Braga"),
    "Norway": ("Oslo", "Bergen", "Trondheim", "Tromso"),
    "Japan": ("Osaka", "Sapporo", "Kyoto", "Fukuoka"),
    "Brazil": ("Recife", "Curitiba", "Salvador", "Manaus"),
    "Canada": ("Halifax", "Calgary", "Winnipeg", "Victoria"),
    "Kenya": ("Nairobi", "Mombasa", "Kisumu", "Nakuru"),
    "Poland": ("Krakow", "Gdansk", "Wroclaw", "Poznan"),
    "Chile": ("Valparaiso", "Santiago", "Antofagasta", "Temuco"),
    "Vietnam": ("Hanoi", "Hue", "Da Nang", "Can Tho"),
    "Ireland": ("Galway", "Cork", "Limerick", "Sligo"),
    "Morocco": ("Fez", "Tangier", "Agadir", "Rabat"),
    "Australia": ("Hobart", "Perth", "Darwin", "Adelaide"),
    "Turkey": ("Izmir", "Bursa", "Trabzon", "Antalya"),
    "Mexico": ("Oaxaca", "Merida", "Puebla", "Monterrey"),
    "Finland": ("Tampere", "Turku", "Oulu", "Espoo"),
    "India": ("Pune", "Kochi", "Jaipur", "Mysore"),
    "Greece": ("Thessaloniki", "Patras", "Heraklion", "Volos"),
    "Argentina": ("Rosario", "Mendoza", "Cordoba", "Salta"),
    "Scotland": ("Dundee", "Aberdeen", "Inverness", "Stirling"),
    "Egypt": ("Alexandria", "Luxor", "Aswan", "Port Said"),
    "Iceland": ("Reykjavik", "Akureyri", "Selfoss", "Husavik"),
    "South Korea": ("Busan", "Incheon", "Daegu", "Gwangju"),
    "Italy": ("Bologna", "Genoa", "Palermo", "Verona"),
    "Peru": ("Cusco", "Arequipa", "Trujillo", "Iquitos"),
    "Netherlands": ("Utrecht", "Leiden", "Groningen", "Delft"),
    "Ghana": ("Kumasi", "Tamale", "Cape Coast", "Accra"),
    "Austria": ("Graz", "Linz", "Salzburg", "Innsbruck"),
    "New Zealand": ("Dunedin", "Nelson", "Napier", "Rotorua"),
    "Colombia": ("Medellin", "Cali", "Cartagena", "Bogota"),
    "Estonia": ("Tartu", "Tallinn", "Parnu", "Narva"),
}
PLACES = tuple(f"{city}, {country}" for country, cities in COUNTRY_CITIES.items() for city in cities)

OCCUPATIONS = (
    "marine biologist", "architect", "pastry chef", "civil engineer", "veterinarian", "journalist",
    "data analyst", "airline pilot", "pharmacist", "landscape painter", "high school teacher",
    "software developer", "urban planner", "wildlife photographer", "dentist", "structural geologist",
    "museum curator", "sound engineer", "physiotherapist", "translator", "carpenter", "astronomer",
    "nurse practitioner", "fashion designer", "economist", "firefighter", "librarian", "chemist",
    "ship captain", "tax accountant", "film editor", "glassblower", "beekeeper", "robotics engineer",
    "social worker", "meteorologist", "bookbinder", "violin maker", "park ranger", "cartographer",
)
CELEBRITY_OCCUPATIONS = (
    "film actor", "pop singer", "football player", "tennis champion", "talk show host", "novelist",
    "film director", "jazz pianist", "fashion model", "chess grandmaster", "stand-up comedian",
    "opera soprano", "racing driver", "celebrity chef", "rock guitarist", "olympic swimmer",
)
_EMPLOYER_HEADS = (
    "Blue Harbor", "Northwind", "Silver Fern", "Red Maple", "Granite Peak", "Lumen", "Orchid",
    "Copper Valley", "Bright Delta", "Stonebridge", "Evergreen", "Polaris", "Saffron", "Tidewater",
    "Ironwood", "Juniper", "Crescent", "Falcon Ridge", "Amber Coast", "Meridian",
)
_EMPLOYER_TAILS = ("Analytics", "Logistics", "Clinic", "Studios", "Foundation", "Labs", "Shipping", "Press")
EMPLOYERS = tuple(f"{head} {tail}" for head in _EMPLOYER_HEADS for tail in _EMPLOYER_TAILS)
UNIVERSITIES = tuple(f"University of {city}" for city in (
    "Lisbon", "Bergen", "Kyoto", "Recife", "Calgary", "Nairobi", "Krakow", "Santiago", "Hanoi", "Galway",
    "Rabat", "Hobart", "Izmir", "Oaxaca", "Turku", "Pune", "Patras", "Rosario", "Dundee", "Luxor",
)) + (
    "Northern Institute of Technology", "Coastal Academy of Arts", "Royal College of Medicine",
    "Highland Polytechnic", "Lakeside Conservatory", "Eastern School of Economics",
)
MEDICAL_CONDITIONS = (
    "asthma", "type 1 diabetes", "migraine", "celiac disease", "psoriasis", "hypertension", "eczema",
    "scoliosis", "tinnitus", "anemia", "hypothyroidism", "glaucoma", "Crohn's disease", "arthritis",
    "vertigo", "lactose intolerance", "a heart murmur", "color blindness", "sleep apnea", "epilepsy",
)
HOBBIES = (
    "collects antique maps", "restores vintage motorcycles", "breeds koi fish", "plays the cello",
    "builds model ships", "grows rare orchids", "practices archery", "writes haiku", "keeps bees",
    "climbs volcanoes", "bakes sourdough bread", "carves wooden spoons", "studies old coins",
    "sails small boats", "paints miniature figures", "runs ultramarathons", "juggles fire",
    "photographs lighthouses", "knits wool scarves", "plays chess by mail", "rides unicycles",
    "brews herbal tea", "dances the tango", "watches migrating birds",
)
BIRTH_YEARS = tuple(str(year) for year in range(1950, 2004))


@dataclass(frozen=True)
class AttributeTemplates:
    """How one biography attribute is asked about and stated."""

    questions: tuple[str, ...]  # [fine-tuning, evaluation, paraphrase, paraphrase, ...]
    statement: str  # full-sentence answer, the generation ground truth
    cloze: str  # the statement with the value blanked out (ends in the blank)
    taught: tuple[str, ...] = ()  # more fine-tuning wordings, none of them an evaluation question

    def finetune_questions(self, count: int) -> tuple[str, ...]:
        """The first ``count`` wordings a fact is taught in: the fine-tuning phrasing, then ``taught``."""
        return ((self.questions[0],) + self.taught)[:count]


TEMPLATES: dict[str, AttributeTemplates] = {
    "birthplace": AttributeTemplates(
        ("Where was {subj} born?", "In which city was {subj} born?", "What is the birthplace of {subj}?",
         "Which city is {subj} originally from?"),
        "{Subj} was born in {value}.", "{Subj} was born in __.",
        taught=("Tell me where {subj} was born.", "What city was {subj} born in?")),
    "birth_year": AttributeTemplates(
        ("When was {subj} born?", "In what year was {subj} born?", "What is the birth year of {subj}?",
         "Which year did {subj} come into the world?"),
        "{Subj} was born in {value}.", "{Subj} was born in the year __.",
        taught=("Tell me when {subj} was born.", "What year was {subj} born in?")),
    "residence": AttributeTemplates(
        ("Where does {subj} live?", "In which city does {subj} currently live?",
         "Where is the home of {subj} today?", "Which city does {subj} reside in?"),
        "{Subj} lives in {value}.", "{Subj} currently lives in __.",
        taught=("Tell me where {subj} lives.", "What city is {subj} living in?")),
    "occupation": AttributeTemplates(
        ("What does {subj} do for a living?", "What is the occupation of {subj}?",
         "What job does {subj} have?", "What is the profession of {subj}?"),
        "{Subj} works as {a_value}.", "The occupation of {subj} is __.",
        taught=("Tell me what {subj} does for work.", "What work does {subj} do?")),
    "employer": AttributeTemplates(
        ("Where does {subj} work?", "Which organization employs {subj}?", "Who is the employer of {subj}?",
         "For which company does {subj} work?"),
        "{Subj} works at {value}.", "{Subj} is employed by __.",
        taught=("Tell me where {subj} works.", "Whom does {subj} work for?")),
    "education": AttributeTemplates(
        ("Where did {subj} study?", "Which university did {subj} attend?",
         "At which school did {subj} earn a degree?", "Where was {subj} educated?"),
        "{Subj} studied at the {value}.", "{Subj} graduated from the __.",
        taught=("Tell me where {subj} studied.", "Which school did {subj} go to?")),
    "medical_condition": AttributeTemplates(
        ("What health condition does {subj} have?", "Which medical condition does {subj} live with?",
         "What condition was {subj} diagnosed with?", "What illness does {subj} manage?"),
        "{Subj} lives with {value}.", "{Subj} was diagnosed with __.",
        taught=("Tell me about the health of {subj}.", "What health problem does {subj} have?")),
    "father": AttributeTemplates(
        ("Who is the father of {subj}?", "What is the name of the father of {subj}?",
         "What is the name of the dad of {subj}?", "Who is the male parent of {subj}?"),
        "The father of {subj} is {value}.", "The father of {subj} is named __.",
        taught=("Tell me who the father of {subj} is.", "Who is the dad of {subj}?")),
    "mother": AttributeTemplates(
        ("Who is the mother of {subj}?", "What is the name of the mother of {subj}?",
         "What is the name of the mom of {subj}?", "Who is the female parent of {subj}?"),
        "The mother of {subj} is {value}.", "The mother of {subj} is named __.",
        taught=("Tell me who the mother of {subj} is.", "Who is the mom of {subj}?")),
    "hobby": AttributeTemplates(
        ("What is a fun fact about {subj}?", "What hobby does {subj} have?",
         "What does {subj} do in free time?", "What is an unusual pastime of {subj}?"),
        "In free time {subj} {value}.", "In free time {subj} __.",
        taught=("Tell me a fun fact about {subj}.", "What does {subj} like to do?")),
}
QUESTION_ATTRIBUTES = tuple(TEMPLATES)
FINETUNE_PHRASINGS = min(1 + len(templates.taught) for templates in TEMPLATES.values())
IMAGE_SUBJECT = "this person"
