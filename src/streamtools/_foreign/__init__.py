"""The fence around other libraries' private API: one module per library.

Every reach into a client library's private attributes, undocumented hooks or error texts
lives in `streamtools._foreign.<library>`, with a comment saying why no public way exists and
which versions were checked. `tests/foreign/` pins the signature of every hook overridden
here, so an upgrade that changes one fails loudly there, in one place.
"""
