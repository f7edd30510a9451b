"""The Blender side of the worker: the client that starts and talks to the worker process
(``client``), the modal job runner every long operator uses (``job``), Set up Worker (``setup``)
and Check Worker (``ops``). Imports only ``inference.protocol`` from the worker side.
"""
