"""Import every domain's models so ``Base.metadata`` holds the whole jobsys schema."""

from jobsys.db.base import Base
from jobsys.failures import models as failures_models
from jobsys.flow import models as flow_models
from jobsys.issues import models as issues_models
from jobsys.jobs import models as jobs_models
from jobsys.lanes import models as lanes_models
from jobsys.pipelines import models as pipelines_models
from jobsys.retry import models as retry_models
from jobsys.schedule import models as schedule_models

metadata = Base.metadata

__all__ = [
    "failures_models",
    "flow_models",
    "issues_models",
    "jobs_models",
    "lanes_models",
    "metadata",
    "pipelines_models",
    "retry_models",
    "schedule_models",
]
