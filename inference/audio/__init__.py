"""Audio in: decoding any file to 16 kHz mono (``decode``), the network's MFCC windows (``features``)
and 100 Hz prosody (``prosody``: energy, pitch, speech/pause). Imports only ``protocol``/``files``.
"""
