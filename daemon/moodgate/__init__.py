"""moodgate: a parental content-filter proxy that scores the emotion of media on the
valence–arousal circumplex and passes, calms or blocks it under each child's policy."""

__version__ = "0.1.0"
