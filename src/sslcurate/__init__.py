"""sslcurate: automatic data curation for self-supervised learning by hierarchical k-means (Vo et al., 2024).

Embeddings in, curated subset out::

    from sslcurate import LevelConfig, hierarchical_kmeans, hierarchical_sampling
    tree = hierarchical_kmeans(x, [LevelConfig(1000, resampling_steps=10, sample_size=15),
                                   LevelConfig(300, resampling_steps=10, sample_size=2)], seed=0)
    indices = hierarchical_sampling(tree, target_size=1000, strategy="random", seed=0)
"""

__version__ = "0.1.0"

from .config import CurationConfig, DedupConfig, KMeansSettings, SamplingConfig  # noqa: E402
from .dedup import deduplicate  # noqa: E402
from .errors import CurationInputError  # noqa: E402
from .hierarchy import ClusterLevel, ClusterTree, LevelConfig, hierarchical_kmeans  # noqa: E402
from .kmeans import KMeansResult, kmeans, resampling_kmeans  # noqa: E402
from .metrics import balance_report, concept_stats, size_stats  # noqa: E402
from .pipeline import CurationResult, curate  # noqa: E402
from .sampling import hierarchical_sampling, water_fill  # noqa: E402
from .sources import ArraySource, EmbeddingSource, NpySource, ShardedNpySource, as_source  # noqa: E402

__all__ = [
    "ArraySource", "ClusterLevel", "ClusterTree", "CurationConfig", "CurationInputError", "CurationResult", "DedupConfig",
    "EmbeddingSource", "KMeansResult", "KMeansSettings", "LevelConfig", "NpySource", "SamplingConfig",
    "ShardedNpySource", "as_source", "balance_report", "concept_stats", "curate", "deduplicate", "hierarchical_kmeans",
    "hierarchical_sampling", "kmeans", "resampling_kmeans", "size_stats", "water_fill",
]
