from .dfa import DFA, DFALayer, FeedbackPointsHandling
