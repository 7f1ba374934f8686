"""The sentences the test model is trained on and the test speech says."""

SENTENCES: tuple[str, ...] = (
    "the quick brown fox jumps over the lazy dog",
    "a streaming speech recognizer turns audio into text while the person is still talking",
    "please call me back tomorrow morning at nine",
    "the weather today is sunny with a light breeze from the west",
    "she sells sea shells by the sea shore",
    "we measured the latency of every chunk on the processor",
    "turn left at the next corner and then go straight for two blocks",
    "my phone number has seven digits and an area code",
    "the meeting starts in ten minutes so please join the call",
    "numbers like one two three four five six seven eight nine ten",
    "hello world this is a test of the speech to text service",
    "can you hear me now good",
    "the cache keeps the left context of every attention layer",
    "right context adds look ahead and therefore latency",
    "open the window and let the fresh air in",
    "thank you very much for your patience",
)
