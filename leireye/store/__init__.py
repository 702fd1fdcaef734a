"""The packet store: every captured frame, whole, in rotating files on disk, with an index."""
