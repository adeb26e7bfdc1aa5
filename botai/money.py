"""Exact money columns on both databases: MoneyField, MoneyAdd and MoneySum.

PostgreSQL stores a DecimalField as numeric(28, 12) and adds it exactly. SQLite has no decimal
type: Django's DecimalField lands in a NUMERIC column as a 64-bit float and is read back at 15
significant digits, so a balance of 10009.829313258288 came back as 10009.8293132583, and SQL
arithmetic (F() + x, SUM) ran in floating point. On SQLite a MoneyField is therefore stored as
its exact decimal text, quantized to its places as PostgreSQL does, and the database is taught
the rest on every connection: a "money" collation so comparisons and ORDER BY are numeric, not
alphabetical, and money_add / money_sum functions that MoneyAdd and MoneySum compile to.

A tool that opens the SQLite file without Django (the sqlite3 shell) reads and writes these
columns as text, but must not sort or compare them: it lacks the collation and says so.
"""

import decimal
from decimal import ROUND_HALF_UP, Decimal

from django.db import models
from django.db.backends.signals import connection_created
from django.db.models import Aggregate, Func, Value

MAX_DIGITS, PLACES = 28, 12
_QUANTUM = Decimal(1).scaleb(-PLACES)
# Sums of 28-digit amounts must not round before they are quantized.
_EXACT = decimal.Context(prec=60, rounding=ROUND_HALF_UP, traps=[decimal.InvalidOperation])
# A float can only come from SQLite's own arithmetic (or a column written before MoneyField):
# it carries 15 significant digits, the rest is binary noise (Django reads decimals so too).
_FROM_FLOAT = decimal.Context(prec=15).create_decimal_from_float


def to_money(value: str | int | float | Decimal, places: int = PLACES) -> Decimal:
    """A database value as a Decimal with `places` decimals (PostgreSQL rounds half away from 0)."""
    if isinstance(value, float):
        value = _FROM_FLOAT(value)
    return _EXACT.create_decimal(value).quantize(Decimal(1).scaleb(-places), context=_EXACT)


class MoneyField(models.DecimalField):
    """A DecimalField (28 digits, 12 places by default) that stays exact on SQLite too."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_digits", MAX_DIGITS)
        kwargs.setdefault("decimal_places", PLACES)
        super().__init__(*args, **kwargs)

    def get_internal_type(self) -> str:
        # Not "DecimalField": Django's SQLite converter for those expects a float and keeps 15
        # digits; from_db_value below does the conversion for every backend.
        return "MoneyField"

    def db_type(self, connection) -> str:
        if connection.vendor == "sqlite":
            return "text COLLATE money"
        return connection.data_types["DecimalField"] % self.db_type_parameters(connection)

    def get_db_prep_value(self, value, connection, prepared=False):
        value = super().get_db_prep_value(value, connection, prepared)
        if connection.vendor != "sqlite" or not isinstance(value, Decimal):
            return value
        money = to_money(value, self.decimal_places)
        if len(money.as_tuple().digits) > self.max_digits:  # PostgreSQL refuses it as well
            raise ValueError(f"{value} does not fit in {self.max_digits} digits")
        return f"{money:f}"

    def from_db_value(self, value, expression, connection):
        if value is None or isinstance(value, Decimal):
            return value
        return to_money(value, self.decimal_places)


def _money_value(amount):
    if isinstance(amount, Decimal | int):
        return Value(amount, output_field=MoneyField())
    return amount


class MoneyAdd(Func):
    """`column + amount` in an UPDATE, exact on both databases. An expression passed as amount
    must have output_field=MoneyField() (Django casts other decimals to float on SQLite)."""

    template = "(%(expressions)s)"
    arg_joiner = " + "

    def __init__(self, column, amount):
        super().__init__(column, _money_value(amount), output_field=MoneyField())

    def as_sqlite(self, compiler, connection, **extra_context):
        return self.as_sql(
            compiler, connection, template="money_add(%(expressions)s)", arg_joiner=", "
        )


class MoneySum(Aggregate):
    """SUM of a money column, exact on both databases."""

    function = "SUM"
    name = "MoneySum"

    def __init__(self, expression, **extra):
        super().__init__(expression, output_field=MoneyField(), **extra)

    def as_sqlite(self, compiler, connection, **extra_context):
        return self.as_sql(compiler, connection, function="money_sum", **extra_context)


def _sqlite_add(a, b) -> str | None:
    if a is None or b is None:  # NULL + x is NULL, as in SQL
        return None
    return f"{_EXACT.add(to_money(a), to_money(b)):f}"


class _SqliteSum:
    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value) -> None:
        if value is not None:  # SUM skips NULLs and is NULL over no rows
            self.total = _EXACT.add(self.total or Decimal(0), to_money(value))

    def finalize(self) -> str | None:
        return None if self.total is None else f"{self.total:f}"


def _sqlite_compare(a: str, b: str) -> int:
    x, y = Decimal(a), Decimal(b)
    return (x > y) - (x < y)


def _teach_sqlite(sender, connection, **kwargs) -> None:
    if connection.vendor != "sqlite":
        return
    raw = connection.connection
    raw.create_collation("money", _sqlite_compare)
    raw.create_function("money_add", 2, _sqlite_add, deterministic=True)
    raw.create_aggregate("money_sum", 1, _SqliteSum)


# Connected where the field is defined: any process that can load a MoneyField teaches its
# SQLite connections the functions the field's columns need.
connection_created.connect(_teach_sqlite, dispatch_uid="botai.money")
