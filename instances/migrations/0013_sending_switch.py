"""The kill switch's history (SendingSwitch): a pause in force is carried over; both groups see the history."""

from django.db import migrations, models

from chips.groups import grant


def forwards(apps, schema_editor):
    RoutingPolicy = apps.get_model("instances", "RoutingPolicy")
    SendingSwitch = apps.get_model("instances", "SendingSwitch")
    for policy in RoutingPolicy.objects.all():
        if policy.is_paused:
            SendingSwitch.objects.create(reason=policy.paused_reason or "?", paused_by=policy.paused_by or "?",
                                         paused_at=policy.paused_at or policy.updated_at)
        elif policy.paused_by or policy.paused_at:
            # Before this change a resume wrote its author and time into the pause fields; they are cleared now.
            policy.paused_reason, policy.paused_by, policy.paused_at = "", "", None
            policy.save(update_fields=["paused_reason", "paused_by", "paused_at"])
    grant(apps, schema_editor, app_label="instances", operators=["view_sendingswitch"], viewers=["view_sendingswitch"])


class Migration(migrations.Migration):

    dependencies = [
        ('instances', '0012_receipts_inbox'),
        ('chips', '0002_operator_groups'),
    ]

    operations = [
        migrations.CreateModel(
            name='SendingSwitch',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('reason', models.CharField(max_length=300, verbose_name='reason')),
                ('paused_by', models.CharField(max_length=150, verbose_name='paused by')),
                ('paused_at', models.DateTimeField(verbose_name='paused at')),
                ('resumed_by', models.CharField(blank=True, max_length=150, verbose_name='resumed by')),
                ('resumed_at', models.DateTimeField(blank=True, null=True, verbose_name='resumed at')),
                ('created_at', models.DateTimeField(auto_now_add=True, verbose_name='created at')),
                ('updated_at', models.DateTimeField(auto_now=True, verbose_name='updated at')),
            ],
            options={
                'verbose_name': 'sending pause',
                'verbose_name_plural': 'sending pauses (history)',
                'ordering': ['-paused_at', '-id'],
                'constraints': [models.UniqueConstraint(models.Value(True), condition=models.Q(('resumed_at__isnull', True)), name='sendingswitch_one_open'), models.CheckConstraint(condition=models.Q(('resumed_at__isnull', True), ('resumed_at__gte', models.F('paused_at')), _connector='OR'), name='sendingswitch_resumed_after_paused'), models.CheckConstraint(condition=models.Q(('reason', ''), _negated=True), name='sendingswitch_reason_given')],
            },
        ),
        migrations.RunPython(forwards, migrations.RunPython.noop),
    ]
