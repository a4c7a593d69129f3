"""Extraction attacks (UnLOK-VQA): is the forgotten answer still readable from the model?"""

# metrics/attacks/<model>.json's key beside the attacks: the deletion before any attack (deletion.py)
REWRITE_SCORE = "rewrite_score"
# ... and how many facts were scored: those the vanilla model knew (stage.known_facts), of all attacked
KNOWN_FACTS = "known_facts"
