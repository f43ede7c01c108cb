"""A streaming writer of mysqldump-format ``.sql.gz`` files, as Wikimedia publishes them.

The layout (header comments, ``SET`` lines, ``CREATE TABLE``, extended
``INSERT`` lines of many tuples cut at about 1 MB, ``ENABLE KEYS`` trailer and
closing comments) copies the real dumps, so the ingest parser is exercised on
the real format. Rows are written as they come, so a dump of millions of rows
never sits in memory. The gzip header carries no file name and mtime 0, so the
same rows give byte-identical files.
"""

from __future__ import annotations

import gzip
import os
from datetime import date

# What mysqldump escapes in string literals (mysql_real_escape_string), plus tab.
_ESCAPES = str.maketrans(
    {
        "\\": "\\\\",
        "'": "\\'",
        '"': '\\"',
        "\n": "\\n",
        "\r": "\\r",
        "\0": "\\0",
        "\x1a": "\\Z",
        "\t": "\\t",
    }
)

HEADER = """-- MySQL dump 10.19  Distrib 10.6.12-MariaDB, for debian-linux-gnu (x86_64)
--
-- Host: localhost    Database: {database}
-- ------------------------------------------------------
-- Server version\t10.6.12-MariaDB
--
-- Synthetic sample written by devtools.sample (wiki-image-topics): NOT a Wikimedia dump.
-- Column order: wikimedia/mediawiki sql/mysql/tables-generated.sql

/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET @OLD_CHARACTER_SET_RESULTS=@@CHARACTER_SET_RESULTS */;
/*!40101 SET @OLD_COLLATION_CONNECTION=@@COLLATION_CONNECTION */;
/*!40101 SET NAMES utf8mb4 */;
/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */;
/*!40103 SET TIME_ZONE='+00:00' */;
/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;
/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;
/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;
/*!40111 SET @OLD_SQL_NOTES=@@SQL_NOTES, SQL_NOTES=0 */;

--
-- Table structure for table `{table}`
--

DROP TABLE IF EXISTS `{table}`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8 */;
{create}
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `{table}`
--

/*!40000 ALTER TABLE `{table}` DISABLE KEYS */;
"""

TRAILER = """/*!40000 ALTER TABLE `{table}` ENABLE KEYS */;
/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;

/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;
/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;
/*!40014 SET UNIQUE_CHECKS=@OLD_UNIQUE_CHECKS */;
/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */;
/*!40101 SET CHARACTER_SET_RESULTS=@OLD_CHARACTER_SET_RESULTS */;
/*!40101 SET COLLATION_CONNECTION=@OLD_COLLATION_CONNECTION */;
/*!40111 SET SQL_NOTES=@OLD_SQL_NOTES */;

-- Dump completed on {completed}
"""


def escape(value) -> str:
    """One SQL literal as mysqldump writes it: NULL, a bare number, or a quoted, escaped string."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "surrogateescape")
    return "'" + str(value).translate(_ESCAPES) + "'"


def completed_stamp(dump_date: str) -> str:
    """mysqldump's closing timestamp ('%Y-%m-%d %k:%M:%S'), at midnight of the dump date."""
    d = date(int(dump_date[:4]), int(dump_date[4:6]), int(dump_date[6:8]))
    return f"{d.isoformat()}  0:00:00"


class DumpWriter:
    """Write one table as a gzipped mysqldump, row by row.

    ``write(row)`` appends a tuple to the current extended INSERT line and
    starts a new ``INSERT INTO`` line when the line would pass
    ``max_line_bytes`` (mysqldump's net_buffer_length cut). The file appears
    under ``path`` only on ``close()`` (written to a temporary sibling first).
    """

    def __init__(
        self,
        path: str,
        table: str,
        create_table_sql: str,
        dump_date: str = "20260101",
        database: str = "commonswiki",
        max_line_bytes: int = 1_000_000,
        compresslevel: int = 6,
    ):
        self.path, self.table = path, table
        self.max_line_bytes = max_line_bytes
        self.dump_date = dump_date
        self.rows = 0
        self._tmp = f"{path}.__writing"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._raw = open(self._tmp, "wb")
        self._gz = gzip.GzipFile(filename="", fileobj=self._raw, mode="wb", mtime=0, compresslevel=compresslevel)
        self._prefix = f"INSERT INTO `{table}` VALUES ".encode()
        self._parts: list[bytes] = []
        self._line_len = 0
        self._gz.write(
            HEADER.format(database=database, table=table, create=create_table_sql.strip()).encode("utf-8")
        )

    def write(self, row) -> None:
        tup = ("(" + ",".join([escape(v) for v in row]) + ")").encode("utf-8", "surrogateescape")
        if self._parts and self._line_len + 1 + len(tup) + 2 > self.max_line_bytes:
            self._flush_line()
        if not self._parts:
            self._line_len = len(self._prefix)
        self._parts.append(tup)
        self._line_len += len(tup) + 1
        self.rows += 1

    def _flush_line(self) -> None:
        if self._parts:
            self._gz.write(self._prefix + b",".join(self._parts) + b";\n")
            self._parts = []
            self._line_len = 0

    def close(self) -> str:
        self._flush_line()
        self._gz.write(TRAILER.format(table=self.table, completed=completed_stamp(self.dump_date)).encode())
        self._gz.close()
        self._raw.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop a half-written dump (on error)."""
        try:
            self._gz.close()
            self._raw.close()
        finally:
            if os.path.exists(self._tmp):
                os.remove(self._tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


# CREATE TABLE statements as the real Commons dumps carry them.
CREATE_PAGE = """CREATE TABLE `page` (
  `page_id` int(10) unsigned NOT NULL AUTO_INCREMENT,
  `page_namespace` int(11) NOT NULL,
  `page_title` varbinary(255) NOT NULL,
  `page_is_redirect` tinyint(3) unsigned NOT NULL DEFAULT 0,
  `page_is_new` tinyint(3) unsigned NOT NULL DEFAULT 0,
  `page_random` double unsigned NOT NULL,
  `page_touched` binary(14) NOT NULL,
  `page_links_updated` binary(14) DEFAULT NULL,
  `page_latest` int(10) unsigned NOT NULL,
  `page_len` int(10) unsigned NOT NULL,
  `page_content_model` varbinary(32) DEFAULT NULL,
  `page_lang` varbinary(35) DEFAULT NULL,
  PRIMARY KEY (`page_id`),
  UNIQUE KEY `page_name_title` (`page_namespace`,`page_title`),
  KEY `page_random` (`page_random`),
  KEY `page_len` (`page_len`),
  KEY `page_redirect_namespace_len` (`page_is_redirect`,`page_namespace`,`page_len`)
) ENGINE=InnoDB AUTO_INCREMENT={auto_increment} DEFAULT CHARSET=binary;"""

CREATE_CATEGORYLINKS_CURRENT = """CREATE TABLE `categorylinks` (
  `cl_from` int(10) unsigned NOT NULL DEFAULT 0,
  `cl_target_id` bigint(20) unsigned NOT NULL,
  `cl_sortkey` varbinary(230) NOT NULL DEFAULT '',
  `cl_sortkey_prefix` varbinary(255) NOT NULL DEFAULT '',
  `cl_timestamp` timestamp NOT NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),
  `cl_type` enum('page','subcat','file') NOT NULL DEFAULT 'page',
  `cl_collation_id` smallint(5) unsigned NOT NULL DEFAULT 0,
  PRIMARY KEY (`cl_from`,`cl_target_id`),
  KEY `cl_sortkey_id` (`cl_target_id`,`cl_type`,`cl_sortkey`,`cl_from`),
  KEY `cl_timestamp_id` (`cl_target_id`,`cl_timestamp`)
) ENGINE=InnoDB DEFAULT CHARSET=binary;"""

CREATE_CATEGORYLINKS_LEGACY = """CREATE TABLE `categorylinks` (
  `cl_from` int(10) unsigned NOT NULL DEFAULT 0,
  `cl_to` varbinary(255) NOT NULL DEFAULT '',
  `cl_sortkey` varbinary(230) NOT NULL DEFAULT '',
  `cl_sortkey_prefix` varbinary(255) NOT NULL DEFAULT '',
  `cl_timestamp` timestamp NOT NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),
  `cl_collation` varbinary(32) NOT NULL DEFAULT '',
  `cl_type` enum('page','subcat','file') NOT NULL DEFAULT 'page',
  PRIMARY KEY (`cl_from`,`cl_to`),
  KEY `cl_sortkey` (`cl_to`,`cl_type`,`cl_sortkey`,`cl_from`),
  KEY `cl_timestamp` (`cl_to`,`cl_timestamp`)
) ENGINE=InnoDB DEFAULT CHARSET=binary;"""

CREATE_LINKTARGET = """CREATE TABLE `linktarget` (
  `lt_id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `lt_namespace` int(11) NOT NULL,
  `lt_title` varbinary(255) NOT NULL,
  PRIMARY KEY (`lt_id`),
  UNIQUE KEY `lt_namespace_title` (`lt_namespace`,`lt_title`)
) ENGINE=InnoDB AUTO_INCREMENT={auto_increment} DEFAULT CHARSET=binary;"""

CREATE_PAGE_PROPS = """CREATE TABLE `page_props` (
  `pp_page` int(10) unsigned NOT NULL,
  `pp_propname` varbinary(60) NOT NULL,
  `pp_value` blob NOT NULL,
  `pp_sortkey` float DEFAULT NULL,
  PRIMARY KEY (`pp_page`,`pp_propname`),
  UNIQUE KEY `pp_propname_page` (`pp_propname`,`pp_page`),
  UNIQUE KEY `pp_propname_sortkey_page` (`pp_propname`,`pp_sortkey`,`pp_page`)
) ENGINE=InnoDB DEFAULT CHARSET=binary;"""

CREATE_REDIRECT = """CREATE TABLE `redirect` (
  `rd_from` int(10) unsigned NOT NULL DEFAULT 0,
  `rd_namespace` int(11) NOT NULL DEFAULT 0,
  `rd_title` varbinary(255) NOT NULL DEFAULT '',
  `rd_interwiki` varbinary(32) DEFAULT NULL,
  `rd_fragment` varbinary(255) DEFAULT NULL,
  PRIMARY KEY (`rd_from`),
  KEY `rd_ns_title` (`rd_namespace`,`rd_title`,`rd_from`)
) ENGINE=InnoDB DEFAULT CHARSET=binary;"""
