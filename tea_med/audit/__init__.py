"""Shortcut audit of a chest X-ray classifier: does it read the lungs or the background?"""
