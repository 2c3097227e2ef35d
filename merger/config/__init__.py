"""Every file format merger reads or writes, as pydantic models, each field documented once."""
