"""The words the auction engine answers with (string enums, so they compare equal to plain strings
and serialise to JSON as themselves). No Django, Celery or Redis imports here."""

from enum import StrEnum


class OpenLocation(StrEnum):
    ABOVE_RANGE = "above_range"
    ABOVE_VALUE = "above_value_in_range"
    IN_VALUE = "in_value"
    BELOW_VALUE = "below_value_in_range"
    BELOW_RANGE = "below_range"


class OpenType(StrEnum):
    UNDETERMINED = "undetermined"
    OPEN_DRIVE_UP = "open_drive_up"
    OPEN_DRIVE_DOWN = "open_drive_down"
    OPEN_TEST_DRIVE_UP = "open_test_drive_up"
    OPEN_TEST_DRIVE_DOWN = "open_test_drive_down"
    OPEN_REJECTION_REVERSE_UP = "open_rejection_reverse_up"
    OPEN_REJECTION_REVERSE_DOWN = "open_rejection_reverse_down"
    OPEN_AUCTION = "open_auction"


class DayType(StrEnum):
    UNDETERMINED = "undetermined"
    NORMAL = "normal"
    NON_TREND = "non_trend"
    NORMAL_VARIATION_UP = "normal_variation_up"
    NORMAL_VARIATION_DOWN = "normal_variation_down"
    TREND_UP = "trend_up"
    TREND_DOWN = "trend_down"
    DOUBLE_DISTRIBUTION_UP = "double_distribution_trend_up"
    DOUBLE_DISTRIBUTION_DOWN = "double_distribution_trend_down"
    NEUTRAL = "neutral"
    NEUTRAL_CENTER = "neutral_center"
    NEUTRAL_EXTREME_UP = "neutral_extreme_up"
    NEUTRAL_EXTREME_DOWN = "neutral_extreme_down"


class ValueRelation(StrEnum):
    UNCHANGED = "unchanged"
    INSIDE = "inside"
    OUTSIDE = "outside"
    HIGHER = "higher"
    LOWER = "lower"
    OVERLAPPING_HIGHER = "overlapping_higher"
    OVERLAPPING_LOWER = "overlapping_lower"


class Balance(StrEnum):
    BALANCE = "balance"
    IMBALANCE = "imbalance"


class Shape(StrEnum):
    NONE = "none"
    D = "D"  # value in the middle of the range
    P = "P"  # value high with a long lower tail (short covering / buying)
    B_LOWER = "b"  # value low with a long upper tail (long liquidation / selling)
    DOUBLE = "B"  # two distributions separated by single prints
    ELONGATED = "I"  # thin, one-timeframing trend profile
