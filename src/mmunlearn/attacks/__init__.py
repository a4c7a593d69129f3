"""Extraction attacks (UnLOK-VQA): is the forgotten answer still readable from the model?"""
