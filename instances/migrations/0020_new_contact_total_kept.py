"""`new_contact_total` kept by its writers instead of generated (W2 7/7): PostgreSQL 15 recomputes a stored
generated column on every UPDATE of the row, parsing its expression anew each time, and a reservation is an
UPDATE of this row. The hour and day counters keep their own CHECKs (PositiveIntegerField): the combined one
was the same rule twice."""

from django.db import migrations, models

FILL = ("UPDATE instances_chipcapacity SET new_contact_total = "
        "(SELECT COALESCE(SUM(GREATEST(COALESCE(n, 0), 0)), 0) FROM unnest(new_contact_counts) AS n)")


class Migration(migrations.Migration):

    dependencies = [
        ('instances', '0019_new_contact_total'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='chipcapacity',
            name='chipcapacity_counts_non_negative',
        ),
        migrations.RemoveField(
            model_name='chipcapacity',
            name='new_contact_total',
        ),
        migrations.AddField(
            model_name='chipcapacity',
            name='new_contact_total',
            field=models.IntegerField(default=0, editable=False, verbose_name='new contacts in all buckets'),
        ),
        migrations.RunSQL(FILL, migrations.RunSQL.noop),
    ]
