"""whisperft: fine-tune OpenAI Whisper on your own audio and time-aligned transcripts."""

__version__ = "0.1.0"
