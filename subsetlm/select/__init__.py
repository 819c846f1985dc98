"""Selection: facility location, greedy optimizers, partitioned selection.

The INGENIOUS gain sampling (:mod:`subsetlm.select.sampling`), budgets
(:mod:`subsetlm.select.budget`), the GPU path (:mod:`subsetlm.select.torch_greedy`, imports
torch lazily) and the store-level glue (:mod:`subsetlm.select.api`) are imported from their
modules.
"""

from subsetlm.select.facility_location import DenseFacilityLocation, SparseFacilityLocation
from subsetlm.select.greedy import GreedyResult, greedy
from subsetlm.select.partitioned import PartitionedResult, partitioned_greedy, split_budget

__all__ = ["DenseFacilityLocation", "SparseFacilityLocation", "GreedyResult", "greedy",
           "PartitionedResult", "partitioned_greedy", "split_budget"]
