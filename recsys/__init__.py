"""The recommender stage: events and profiles, candidates since the last visit, rankers,
diversity and explanations."""

from recsys.candidates import ArticleInfo, CandidateMatrix
from recsys.demo import load_readers
from recsys.events import (
    Event,
    EventRepository,
    EventsRejected,
    EventType,
    InMemoryEventStore,
    JsonlEventStore,
    record_events,
    validate_events,
)
from recsys.profiles import Profile, ProfileConfig, build_profile
from recsys.rankers import FEATURES, RANKERS, Impression, Ranker, features, make_ranker
from recsys.recommend import Item, Reason, Recommender, RecsysConfig, mmr

__all__ = [
    "FEATURES",
    "RANKERS",
    "ArticleInfo",
    "CandidateMatrix",
    "Event",
    "EventRepository",
    "EventType",
    "EventsRejected",
    "Impression",
    "InMemoryEventStore",
    "Item",
    "JsonlEventStore",
    "Profile",
    "ProfileConfig",
    "Ranker",
    "Reason",
    "Recommender",
    "RecsysConfig",
    "build_profile",
    "features",
    "load_readers",
    "make_ranker",
    "mmr",
    "record_events",
    "validate_events",
]
