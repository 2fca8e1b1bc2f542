"""Output formats: records (JSON, CSV), files (.npy, .png, atomic) and a Writer per format."""

from densecls.formats.files import atomic_writer, output_path, write_npy, write_png
from densecls.formats.records import (
    CSV_HEADER,
    CSV_SCALE_HEADER,
    csv_rows,
    csv_text,
    flat_record,
    iter_map_json,
    map_json,
    record,
)
from densecls.formats.writers import (
    STREAM_FORMATS,
    ColumnsWriter,
    CsvWriter,
    JsonlWriter,
    JsonWriter,
    NpyWriter,
    Pictures,
    PictureWriter,
    StreamFormat,
    TableWriter,
    Writer,
    stream_writer,
)

__all__ = [
    "CSV_HEADER",
    "CSV_SCALE_HEADER",
    "STREAM_FORMATS",
    "ColumnsWriter",
    "CsvWriter",
    "JsonWriter",
    "JsonlWriter",
    "NpyWriter",
    "PictureWriter",
    "Pictures",
    "StreamFormat",
    "TableWriter",
    "Writer",
    "atomic_writer",
    "csv_rows",
    "csv_text",
    "flat_record",
    "iter_map_json",
    "map_json",
    "output_path",
    "record",
    "stream_writer",
    "write_npy",
    "write_png",
]
